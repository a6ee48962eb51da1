"""Built-in channel ``smpp``: SMS straight to an operator's or aggregator's SMSC over SMPP 3.4.

The sender binds once (bind_transceiver by default, so delivery receipts come
back on the same connection; bind_transmitter when receipts go elsewhere) and
keeps the bind between batches: an idle connection is probed with
enquire_link before it is used, and re-bound when it is gone. close() unbinds.

Each message is split as operators bill it (campaignctl.sms): GSM-7 with
data_coding 0 (one septet per octet, as SMPP carries the default alphabet) or
UCS-2 with data_coding 8; a long text becomes concatenated parts, each with a
user data header ``05 00 03 ref total seq`` and esm_class 0x40 (UDHI). The
reference is derived from the message key, so a resend carries the same one.
Up to ``window`` submit_sm are outstanding at once.

Results: every part accepted: sent, the provider id is the SMSC's message ids
joined by commas. A part refused with a "not now" status (throttled, queue
full, system error) and none accepted: temporary; any other refusal: permanent.
Some parts accepted and others refused: permanent, because sending the message
again would repeat the accepted parts. A part with no answer before
``timeout`` (or a connection lost with parts unanswered): the result's status
is ``in_doubt``, which campaignctl.delivery records as in doubt, for a person
to settle rather than a blind resend.

Delivery receipts (deliver_sm with esm_class 0x04) received while bound are
read with :func:`parse_receipt` and become outcomes (campaignctl.state.Outcome:
``delivered`` once every part is delivered, ``bounced`` on the first part that
is not); :meth:`SmppSender.drain_outcomes` hands them over and forgets them
(the sender is a campaignctl.contracts.OutcomeSource: deliver() stores them).
Receipts for ids this sender did not submit (an earlier process) are kept in
``unmatched_receipts`` for the caller to match by provider id.

Only the standard library is used: the PDUs an ESME needs are few and small
(pdu.py), and a synchronous socket fits the synchronous ChannelSender.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from campaignctl import sms
from campaignctl.contracts import IN_DOUBT, OutgoingMessage, SendResult, unknown_options
from campaignctl.hookspecs import hookimpl
from campaignctl.model import Channel
from campaignctl.state import Outcome

from . import pdu
from .pdu import Address, Pdu, PduError, ShortMessage

__version__ = "0.1.0"

OPTIONS = ("host", "port", "system_id", "password", "system_type", "bind", "source_addr", "source_ton", "source_npi",
           "receipts", "window", "timeout", "enquire_link", "tls", "ca_file")
BINDS = {"transceiver": pdu.BIND_TRANSCEIVER, "transmitter": pdu.BIND_TRANSMITTER}
UDH_CONCATENATION = b"\x05\x00\x03"  # header length 5; IE 00 (concatenated, 8-bit reference), IE length 3


class SmppError(ConnectionError):
    """The SMSC refused the bind or the connection broke."""


@dataclass(frozen=True, repr=False)
class SmppSettings:
    host: str
    system_id: str
    password: str
    port: int = 2775
    system_type: str = ""
    bind: str = "transceiver"
    source: Address = Address(5, 0, "")
    receipts: bool = True
    window: int = 10
    timeout: float = 10.0
    enquire_link: float = 30.0  # seconds idle after which the bind is probed before use
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], project_root: Path) -> "SmppSettings":
        if problem := unknown_options(options, OPTIONS, "smpp"):
            raise ValueError(problem)
        for required in ("host", "system_id", "password", "source_addr"):
            if not isinstance(options.get(required), str) or not options[required]:
                raise ValueError(f"smpp: option {required!r} is required (a string; the password as ${{env:NAME}})")
        bind_type = options.get("bind", "transceiver")
        if bind_type not in BINDS:
            raise ValueError(f"smpp: option 'bind' must be transceiver or transmitter, not {bind_type!r}")
        numbers = {"port": (options.get("port", 2775), 1, 65535), "window": (options.get("window", 10), 1, 100)}
        for name, (value, low, high) in numbers.items():
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"smpp: option {name!r} must be a whole number from {low} to {high}")
        for name in ("timeout", "enquire_link"):
            value = options.get(name, 10 if name == "timeout" else 30)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"smpp: option {name!r} must be a positive number of seconds")
        source = options["source_addr"]
        ton, npi = (1, 1) if sms.PHONE.match(source) else (5, 0)  # a number is international; letters are alphanumeric
        ca_file = options.get("ca_file")
        if ca_file is not None and not Path(ca_file).is_absolute():
            ca_file = str(project_root / ca_file)
        return cls(
            options["host"], options["system_id"], options["password"], options.get("port", 2775), options.get("system_type", ""),
            bind_type, Address(int(options.get("source_ton", ton)), int(options.get("source_npi", npi)), source.lstrip("+")),
            bool(options.get("receipts", True)), options.get("window", 10), float(options.get("timeout", 10)),
            float(options.get("enquire_link", 30)), bool(options.get("tls", False)), ca_file,
        )


# --------------------------------------------------------------------------- receipts


@dataclass(frozen=True)
class Receipt:
    """An SMSC delivery receipt (SMPP 3.4 appendix B)."""

    message_id: str
    stat: str  # DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD, ENROUTE
    error: str | None = None
    done_at: datetime | None = None


# Final states: delivered, or not and never will be.
OUTCOME_OF_STAT = {"DELIVRD": "delivered", "UNDELIV": "bounced", "REJECTD": "bounced", "EXPIRED": "bounced", "DELETED": "bounced"}
# message_state TLV values (5.2.28) as receipt stat words
STAT_OF_STATE = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
_RECEIPT_FIELD = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in {
    "id": r"\bid:(\S+)", "stat": r"\bstat:(\w+)", "err": r"\berr:(\w+)", "done": r"\bdone date:(\d{10}(?:\d{2})?)",
}.items()}


def parse_receipt(short_message: bytes | str, tlvs: Mapping[int, bytes] | None = None) -> Receipt | None:
    """A delivery receipt from a deliver_sm's text (``id:... stat:DELIVRD ...``)
    and optional parameters (receipted_message_id, message_state win over the
    text); None when it names no message id or state."""
    text = short_message.decode("latin-1") if isinstance(short_message, bytes) else short_message
    found = {name: (match.group(1) if (match := pattern.search(text)) else None) for name, pattern in _RECEIPT_FIELD.items()}
    tlvs = tlvs or {}
    message_id = tlvs[pdu.TLV_RECEIPTED_MESSAGE_ID].rstrip(b"\0").decode("latin-1") if pdu.TLV_RECEIPTED_MESSAGE_ID in tlvs else found["id"]
    stat = found["stat"].upper() if found["stat"] else None
    if pdu.TLV_MESSAGE_STATE in tlvs and tlvs[pdu.TLV_MESSAGE_STATE]:
        stat = STAT_OF_STATE.get(tlvs[pdu.TLV_MESSAGE_STATE][0], stat)
    if not message_id or not stat:
        return None
    return Receipt(message_id, stat, found["err"], _receipt_time(found["done"]))


def _receipt_time(value: str | None) -> datetime | None:
    """YYMMDDhhmm[ss]; SMSCs write their own clock, taken as UTC."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%y%m%d%H%M%S" if len(value) == 12 else "%y%m%d%H%M").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _id_forms(message_id: str) -> set[str]:
    """An SMSC id as given and in the other base: some SMSCs answer submit_sm
    with a hex id and write it in decimal in the receipt, or the reverse."""
    forms = {message_id, message_id.lower()}
    if re.fullmatch(r"[0-9a-fA-F]+", message_id):
        forms.add(str(int(message_id, 16)))
    if message_id.isdigit():
        forms.add(format(int(message_id), "x"))
    return forms


# --------------------------------------------------------------------------- segments


def segments(key: str, text: str, destination: Address, source: Address, receipts: bool) -> list[ShortMessage]:
    """The submit_sm bodies of one message: one, or concatenated parts with a UDH."""
    coding = sms.encoding(text)
    split = sms.parts(text)
    if len(split) > sms.MAX_PARTS:
        raise ValueError(f"the text needs {len(split)} parts; at most {sms.MAX_PARTS} can be concatenated")
    encode = sms.encode_gsm7 if coding == sms.GSM7 else (lambda part: part.encode("utf-16-be"))
    data_coding = pdu.DATA_CODING_DEFAULT if coding == sms.GSM7 else pdu.DATA_CODING_UCS2
    registered = pdu.RECEIPT_ON_FINAL if receipts else 0
    if len(split) == 1:
        return [ShortMessage(source, destination, encode(split[0]), 0, data_coding, registered)]
    reference = hashlib.sha256(key.encode()).digest()[0]  # the same on a resend, so a phone can match the parts
    total = len(split)
    return [
        ShortMessage(source, destination, UDH_CONCATENATION + bytes((reference, total, seq)) + encode(part), pdu.ESM_UDHI, data_coding, registered)
        for seq, part in enumerate(split, start=1)
    ]


# --------------------------------------------------------------------------- the sender


@dataclass
class _Message:
    key: str
    parts: int
    accepted: dict[int, str] = field(default_factory=dict)  # part -> SMSC message id
    refused: dict[int, int] = field(default_factory=dict)  # part -> command_status
    unanswered: set[int] = field(default_factory=set)  # parts written, no answer
    unsent: int = 0  # parts never written

    def result(self) -> SendResult:
        if len(self.accepted) == self.parts:
            return SendResult(self.key, "sent", provider_id=",".join(self.accepted[p] for p in sorted(self.accepted)))
        if self.unanswered:
            return SendResult(self.key, IN_DOUBT, error=f"no answer from the SMSC for part(s) {sorted(self.unanswered)} of {self.parts}")
        if self.accepted:
            refused = ", ".join(f"{p}: {pdu.status_name(s)}" for p, s in sorted(self.refused.items())) or "the connection broke"
            return SendResult(self.key, "permanent_failure", error=f"partially sent ({len(self.accepted)} of {self.parts} parts accepted; "
                              f"refused {refused}); not resent, which would repeat the accepted parts")
        if self.refused and not all(status in pdu.TEMPORARY_STATUSES for status in self.refused.values()):
            return SendResult(self.key, "permanent_failure", error=_refusal(self.refused))
        return SendResult(self.key, "temporary_failure", error=_refusal(self.refused) if self.refused else "not submitted: the connection broke")


def _refusal(refused: Mapping[int, int]) -> str:
    return "SMSC refused: " + ", ".join(sorted({pdu.status_name(status) for status in refused.values()}))


class SmppSender:
    """One SMPP bind, kept open between batches."""

    def __init__(self, settings: SmppSettings, channel: str = "sms"):
        self.settings = settings
        self.channel = channel
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._sequence = 0
        self._last_used = 0.0
        self._key_of_id: dict[str, tuple[str, str]] = {}  # SMSC id (any form) -> (message key, canonical id)
        self._waiting: dict[str, set[str]] = {}  # message key -> canonical ids not yet receipted delivered
        self._reported: set[str] = set()  # keys with an outcome already given
        self._outcomes: list[Outcome] = []
        self.unmatched_receipts: list[Receipt] = []

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "SmppSender":
        return cls(SmppSettings.from_options(channel.options, project_root), channel.name)

    # -- the ChannelSender protocol

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        prepared: list[SendResult | list[ShortMessage]] = [self._prepare(message) for message in messages]
        if all(isinstance(item, SendResult) for item in prepared):
            return list(prepared)
        try:
            self._ensure_bound()
        except (OSError, PduError) as exc:
            self._drop()
            error = f"SMSC {self.settings.host}:{self.settings.port} not bound: {exc}"
            return [item if isinstance(item, SendResult) else SendResult(m.key, "temporary_failure", error=error)
                    for m, item in zip(messages, prepared)]
        tracked = {i: _Message(m.key, len(item)) for i, (m, item) in enumerate(zip(messages, prepared)) if not isinstance(item, SendResult)}
        self._submit(prepared, tracked)
        return [item if isinstance(item, SendResult) else tracked[i].result() for i, item in enumerate(prepared)]

    def close(self) -> None:
        """Unbind (waiting briefly for unbind_resp) and close the connection."""
        if self._socket is None:
            return
        try:
            sequence = self._next_sequence()
            self._write(Pdu(pdu.UNBIND, 0, sequence))
            deadline = time.monotonic() + min(self.settings.timeout, 5)
            while (answer := self._read(deadline)) is not None:
                if answer.command_id == pdu.UNBIND | pdu.RESPONSE and answer.sequence == sequence:
                    break
        except (OSError, PduError):
            pass  # closing anyway
        finally:
            self._drop()

    # -- receipts

    def drain_outcomes(self, wait: float = 0.0) -> list[Outcome]:
        """Outcomes from the delivery receipts received so far, reading for up
        to ``wait`` seconds more first; each is given once."""
        if self._socket is not None:
            deadline = time.monotonic() + wait
            try:
                while self._read(deadline) is not None:
                    pass
            except (OSError, PduError):
                self._drop()
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    # -- internals

    def _prepare(self, message: OutgoingMessage) -> SendResult | list[ShortMessage]:
        checked = sms.sms_to_send(message)
        if isinstance(checked, SendResult):
            return checked
        to, text = checked
        return segments(message.key, text, Address(1, 1, to.lstrip("+")), self.settings.source, self.settings.receipts)

    def _submit(self, prepared: list, tracked: dict[int, _Message]) -> None:
        queue = deque((i, seq, body) for i, item in enumerate(prepared) if i in tracked for seq, body in enumerate(item, start=1))
        outstanding: dict[int, tuple[int, int]] = {}  # sequence -> (message index, part)
        deadline = time.monotonic() + self.settings.timeout
        try:
            while queue or outstanding:
                while queue and len(outstanding) < self.settings.window:
                    i, part, body = queue.popleft()
                    sequence = self._next_sequence()
                    outstanding[sequence] = (i, part)
                    self._write(pdu.submit_sm(sequence, body))
                    deadline = time.monotonic() + self.settings.timeout
                answer = self._read(deadline)
                if answer is None:
                    break  # the SMSC stopped answering within the timeout
                if answer.sequence in outstanding and answer.command_id in (pdu.SUBMIT_SM | pdu.RESPONSE, pdu.GENERIC_NACK):
                    i, part = outstanding.pop(answer.sequence)
                    smsc_id = pdu.message_id(answer.body) if answer.status == 0 else None
                    if smsc_id:
                        tracked[i].accepted[part] = smsc_id
                    else:
                        tracked[i].refused[part] = answer.status or 0xFF
                    deadline = time.monotonic() + self.settings.timeout
        except (OSError, PduError):
            self._drop()  # what was written and not answered stays in doubt below
        for i, part in outstanding.values():
            tracked[i].unanswered.add(part)
        for i, _part, _body in queue:
            tracked[i].unsent += 1
        if outstanding:
            self._drop()  # answers may still come for those sequences; a new bind starts clean
        for message in tracked.values():
            if len(message.accepted) == message.parts:
                self._expect_receipts(message)
        early, self.unmatched_receipts = self.unmatched_receipts, []
        for receipt in early:  # a receipt can beat the batch's last submit_sm_resp
            self._on_receipt(receipt)

    def _expect_receipts(self, message: _Message) -> None:
        if not self.settings.receipts:
            return
        ids = set()
        for smsc_id in message.accepted.values():
            ids.add(smsc_id)
            for form in _id_forms(smsc_id):
                self._key_of_id[form] = (message.key, smsc_id)
        self._waiting[message.key] = ids

    def _on_receipt(self, receipt: Receipt) -> None:
        match = self._key_of_id.get(receipt.message_id) or next(
            (self._key_of_id[form] for form in _id_forms(receipt.message_id) if form in self._key_of_id), None)
        if match is None:
            self.unmatched_receipts.append(receipt)
            return
        key, canonical = match
        outcome = OUTCOME_OF_STAT.get(receipt.stat)
        if outcome is None or key in self._reported:
            return  # not final yet, or already told
        waiting = self._waiting.get(key, set())
        if outcome == "delivered":
            waiting.discard(canonical)
            if waiting:
                return  # delivered once every part is
        self._reported.add(key)
        payload = {"provider_id": receipt.message_id, "stat": receipt.stat}
        if receipt.error:
            payload["err"] = receipt.error
        self._outcomes.append(Outcome(key, outcome, receipt.done_at or datetime.now(timezone.utc), payload))

    def _ensure_bound(self) -> None:
        if self._socket is not None and time.monotonic() - self._last_used > self.settings.enquire_link:
            try:
                self._enquire_link()
            except (OSError, PduError):
                self._drop()
        if self._socket is None:
            self._bind()

    def _connect(self) -> socket.socket:
        raw = socket.create_connection((self.settings.host, self.settings.port), timeout=self.settings.timeout)
        if not self.settings.tls:
            return raw
        context = ssl.create_default_context(cafile=self.settings.ca_file)
        return context.wrap_socket(raw, server_hostname=self.settings.host)

    def _bind(self) -> None:
        self._socket, self._buffer = self._connect(), b""
        sequence = self._next_sequence()
        command = BINDS[self.settings.bind]
        self._write(pdu.bind(command, sequence, self.settings.system_id, self.settings.password, self.settings.system_type))
        deadline = time.monotonic() + self.settings.timeout
        while True:
            answer = self._read(deadline)
            if answer is None:
                raise SmppError(f"no bind response within {self.settings.timeout:g} s")
            if answer.command_id in (command | pdu.RESPONSE, pdu.GENERIC_NACK) and answer.sequence == sequence:
                if answer.status != 0:
                    hint = " (check system_id and password)" if answer.status in (0x0D, 0x0E, 0x0F) else ""
                    raise SmppError(f"bind refused: {pdu.status_name(answer.status)}{hint}")
                return

    def _enquire_link(self) -> None:
        sequence = self._next_sequence()
        self._write(Pdu(pdu.ENQUIRE_LINK, 0, sequence))
        deadline = time.monotonic() + self.settings.timeout
        while (answer := self._read(deadline)) is not None:
            if answer.command_id == pdu.ENQUIRE_LINK | pdu.RESPONSE and answer.sequence == sequence:
                return
        raise SmppError("no enquire_link_resp")

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1  # 1 .. 0x7FFFFFFF (5.1.2.4)
        return self._sequence

    def _write(self, packet: Pdu) -> None:
        if self._socket is None:
            raise SmppError("not connected")
        self._socket.sendall(packet.encode())
        self._last_used = time.monotonic()

    def _read(self, deadline: float) -> Pdu | None:
        """The next response PDU, answering the SMSC's own requests on the way;
        None when ``deadline`` passes first."""
        while True:
            packet = self._read_pdu(deadline)
            if packet is None or packet.command_id & pdu.RESPONSE:
                return packet
            self._answer_request(packet)

    def _answer_request(self, packet: Pdu) -> None:
        if packet.command_id == pdu.DELIVER_SM:
            try:
                delivered = ShortMessage.decode_body(packet.body)
            except PduError:
                self._write(pdu.response(packet, 0x03))  # ESME_RINVCMDID... malformed: refused, the SMSC retries
                return
            if delivered.esm_class & pdu.ESM_TYPE_MASK == pdu.ESM_DELIVERY_RECEIPT:
                receipt = parse_receipt(delivered.short_message, delivered.tlvs)
                if receipt is not None:
                    self._on_receipt(receipt)
            self._write(pdu.response(packet, 0, b"\0"))  # deliver_sm_resp: message_id unused, empty
        elif packet.command_id == pdu.ENQUIRE_LINK:
            self._write(pdu.response(packet))
        elif packet.command_id == pdu.UNBIND:
            self._write(pdu.response(packet))
            raise SmppError("the SMSC unbound")
        else:
            self._write(Pdu(pdu.GENERIC_NACK, 0x03, packet.sequence))  # ESME_RINVCMDID

    def _read_pdu(self, deadline: float) -> Pdu | None:
        while True:
            if len(self._buffer) >= pdu.HEADER.size:
                length, command_id, status, sequence = pdu.read_header(self._buffer[:pdu.HEADER.size])
                if len(self._buffer) >= length:
                    body, self._buffer = self._buffer[pdu.HEADER.size:length], self._buffer[length:]
                    return Pdu(command_id, status, sequence, body)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._socket is None:
                return None
            self._socket.settimeout(remaining)
            try:
                chunk = self._socket.recv(65536)
            except (TimeoutError, socket.timeout):
                return None
            if not chunk:
                raise SmppError("the SMSC closed the connection")
            self._buffer += chunk

    def _drop(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket, self._buffer = None, b""


@hookimpl
def register_channels(register):
    register("smpp", SmppSender.from_config)
