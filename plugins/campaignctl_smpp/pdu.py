"""The SMPP 3.4 PDUs an ESME sending campaign SMS needs, encoded and decoded.

Every PDU is a 16-octet header (command_length, command_id, command_status,
sequence_number; big-endian 32-bit) and a body of C-octet strings (NUL
terminated), single octets and, after the mandatory fields, optional TLVs
(tag, length: 16 bits each). Section numbers refer to the SMPP v3.4
specification (issue 1.2, 1999).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Mapping

HEADER = struct.Struct(">IIII")
MAX_PDU = 64 * 1024  # far above any PDU this client sends or expects; a bigger length is a broken stream

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
RESPONSE = 0x80000000  # a response's command_id is its request's with this bit set

INTERFACE_VERSION = 0x34

# esm_class (5.2.12)
ESM_UDHI = 0x40  # short_message starts with a user data header
ESM_TYPE_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
# data_coding (5.2.19)
DATA_CODING_DEFAULT = 0x00  # the SMSC default alphabet: GSM 03.38, one septet per octet
DATA_CODING_UCS2 = 0x08
# registered_delivery (5.2.17): an SMSC receipt on final outcome, success or failure
RECEIPT_ON_FINAL = 0x01

# Optional parameters (5.3.2)
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_NETWORK_ERROR_CODE = 0x0423

# command_status values (5.1.3) named in errors; the rest are shown in hex.
STATUS_NAMES = {
    0x00: "ESME_ROK", 0x01: "ESME_RINVMSGLEN", 0x02: "ESME_RINVCMDLEN", 0x03: "ESME_RINVCMDID", 0x04: "ESME_RINVBNDSTS",
    0x05: "ESME_RALYBND", 0x08: "ESME_RSYSERR", 0x0A: "ESME_RINVSRCADR", 0x0B: "ESME_RINVDSTADR", 0x0C: "ESME_RINVMSGID",
    0x0D: "ESME_RBINDFAIL", 0x0E: "ESME_RINVPASWD", 0x0F: "ESME_RINVSYSID", 0x14: "ESME_RMSGQFUL", 0x45: "ESME_RSUBMITFAIL",
    0x48: "ESME_RINVSRCTON", 0x49: "ESME_RINVSRCNPI", 0x50: "ESME_RINVDSTTON", 0x51: "ESME_RINVDSTNPI",
    0x58: "ESME_RTHROTTLED", 0x61: "ESME_RINVSCHED", 0x62: "ESME_RINVEXPIRY", 0x64: "ESME_RX_T_APPN",
    0x65: "ESME_RX_P_APPN", 0x66: "ESME_RX_R_APPN", 0xFF: "ESME_RUNKNOWNERR",
}
# Statuses that say "not now" rather than "never": the message may be submitted again.
TEMPORARY_STATUSES = frozenset({0x08, 0x14, 0x45, 0x58, 0x64, 0xFF})


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


class PduError(ValueError):
    """A PDU that cannot be read: the stream is no longer trustworthy."""


@dataclass(frozen=True)
class Pdu:
    command_id: int
    status: int
    sequence: int
    body: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(HEADER.size + len(self.body), self.command_id, self.status, self.sequence) + self.body


def read_header(header: bytes) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number), checked."""
    length, command_id, status, sequence = HEADER.unpack(header)
    if not HEADER.size <= length <= MAX_PDU:
        raise PduError(f"command_length {length} out of range")
    return length, command_id, status, sequence


def cstring(value: str, max_octets: int, field_name: str) -> bytes:
    """A C-octet string (5.1.1) of at most ``max_octets`` including the NUL."""
    raw = value.encode("ascii")
    if len(raw) >= max_octets or b"\0" in raw:
        raise ValueError(f"{field_name} {value!r} is longer than {max_octets - 1} characters or not plain ASCII")
    return raw + b"\0"


def bind(command_id: int, sequence: int, system_id: str, password: str, system_type: str = "") -> Pdu:
    """bind_transmitter / bind_transceiver (4.1)."""
    body = (cstring(system_id, 16, "system_id") + cstring(password, 9, "password") + cstring(system_type, 13, "system_type")
            + bytes((INTERFACE_VERSION, 0, 0)) + cstring("", 41, "address_range"))
    return Pdu(command_id, 0, sequence, body)


@dataclass(frozen=True)
class Address:
    ton: int
    npi: int
    value: str


@dataclass(frozen=True)
class ShortMessage:
    """The fields of submit_sm (4.4.1) and deliver_sm (4.6.1), which share a body."""

    source: Address
    destination: Address
    short_message: bytes
    esm_class: int = 0
    data_coding: int = DATA_CODING_DEFAULT
    registered_delivery: int = 0
    service_type: str = ""
    validity_period: str = ""
    tlvs: Mapping[int, bytes] = field(default_factory=dict)

    def encode_body(self) -> bytes:
        if len(self.short_message) > 254:
            raise ValueError(f"short_message of {len(self.short_message)} octets; at most 254 fit")
        return (
            cstring(self.service_type, 6, "service_type")
            + bytes((self.source.ton, self.source.npi)) + cstring(self.source.value, 21, "source_addr")
            + bytes((self.destination.ton, self.destination.npi)) + cstring(self.destination.value, 21, "destination_addr")
            + bytes((self.esm_class, 0, 0))  # protocol_id, priority_flag
            + cstring("", 17, "schedule_delivery_time") + cstring(self.validity_period, 17, "validity_period")
            + bytes((self.registered_delivery, 0, self.data_coding, 0, len(self.short_message)))  # ..., replace_if_present, sm_default_msg_id
            + self.short_message
            + b"".join(struct.pack(">HH", tag, len(value)) + value for tag, value in sorted(self.tlvs.items()))
        )

    @classmethod
    def decode_body(cls, body: bytes) -> "ShortMessage":
        reader = _Reader(body)
        service_type = reader.cstring()
        source = Address(reader.octet(), reader.octet(), reader.cstring())
        destination = Address(reader.octet(), reader.octet(), reader.cstring())
        esm_class, _protocol_id, _priority = reader.octet(), reader.octet(), reader.octet()
        reader.cstring()  # schedule_delivery_time
        validity = reader.cstring()
        registered_delivery, _replace, data_coding, _default_id = reader.octet(), reader.octet(), reader.octet(), reader.octet()
        short_message = reader.take(reader.octet())
        tlvs = {}
        while reader.remaining():
            tag, length = struct.unpack(">HH", reader.take(4))
            tlvs[tag] = reader.take(length)
        return cls(source, destination, short_message, esm_class, data_coding, registered_delivery, service_type, validity, tlvs)


def submit_sm(sequence: int, message: ShortMessage) -> Pdu:
    return Pdu(SUBMIT_SM, 0, sequence, message.encode_body())


def response(request: Pdu, status: int = 0, body: bytes = b"") -> Pdu:
    """The response to a request the SMSC sent (deliver_sm, enquire_link, unbind)."""
    return Pdu(request.command_id | RESPONSE, status, request.sequence, body)


def message_id(body: bytes) -> str | None:
    """The message_id of a submit_sm_resp (4.4.2); None when the body is empty (an error response)."""
    if not body:
        return None
    return _Reader(body).cstring()


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def octet(self) -> int:
        if self.at >= len(self.data):
            raise PduError("PDU body ends early")
        self.at += 1
        return self.data[self.at - 1]

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.at)
        if end < 0:
            raise PduError("C-octet string without its NUL")
        value, self.at = self.data[self.at:end], end + 1
        return value.decode("latin-1")

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise PduError("PDU body ends early")
        value, self.at = self.data[self.at:self.at + n], self.at + n
        return value

    def remaining(self) -> int:
        return len(self.data) - self.at
