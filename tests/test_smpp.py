"""The smpp channel against a real SMSC: smpp34's SMPP 3.4 server (a Rust
implementation independent of ours) on localhost. The SMSC
(tests/contract/sms_peers.py) reassembles concatenated messages by their user
data headers, as a phone does, and sends delivery receipts back on the bind."""

from __future__ import annotations

import socket
import time

import pytest
import smpp34
from campaignctl_smpp import Receipt, parse_receipt, segments
from campaignctl_smpp.pdu import Address
from contract.sms_peers import Smsc

from campaignctl import plugins, sms
from campaignctl.contracts import OutcomeSource, OutgoingMessage
from campaignctl.delivery import ALREADY_SENT, FAILED_PERMANENT, SENT, DueMessage, deliver
from campaignctl.model import Channel, PluginConfig

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def smsc():
    server = Smsc().start()
    yield server
    server.stop()


def options(smsc: Smsc, **extra) -> dict:
    return {"host": "127.0.0.1", "port": smsc.port, "system_id": "uyut", "password": "s3cret", "source_addr": "Uyut", "timeout": 5, **extra}


def sender(smsc: Smsc, tmp_path, **extra):
    return plugins.registry().channels["smpp"](Channel("sms", "smpp", "sms", 2.9, options(smsc, **extra)), tmp_path)


def message(n: int, text: str, to: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(f"winback/v3/{n}/1/2026-11-24", "winback", str(n), "sms", to or f"+7 (900) 000-{n:04d}", {"body": text})


TEXTS = {
    "gsm7, 1 part": "Uyut: -10% on everything until Sunday, code HOME10 {50} [x] €",
    "gsm7, 2 parts, euro at the boundary": "a" * 152 + "€" + "b" * 100,
    "gsm7, 3 parts": "Hello Anna! " * 30,
    "ucs2, 1 part": "Анна, скидка 10% до воскресенья",
    "ucs2, 2 parts": "Анна, мы скучаем! Ваша скидка 15% ждёт вас в магазинах Уют до конца недели. 🏠",
    "ucs2, 3 parts, emoji at a boundary": "я" * 66 + "😀" + "Привет! " * 12,
}


def test_gsm7_and_cyrillic_texts_of_one_to_three_parts_reach_the_smsc_whole(smsc, tmp_path):
    texts = list(TEXTS.values())
    batch = [message(n, text) for n, text in enumerate(texts)]
    channel = sender(smsc, tmp_path)
    try:
        results = channel.send(batch)
    finally:
        channel.close()
    assert [r.key for r in results] == [m.key for m in batch]
    assert [r.status for r in results] == ["sent"] * len(batch), results
    assert [len(r.provider_id.split(",")) for r in results] == [sms.part_count(text) for text in texts] == [1, 2, 3, 1, 2, 3]
    assert smsc.texts() == {f"7900000{n:04d}": [text] for n, text in enumerate(texts)}
    for s in smsc.submitted:
        assert s.data_coding == (0 if sms.encoding(texts[int(s.destination[-4:])]) == sms.GSM7 else 8)
        assert s.registered_delivery == 1 and s.source == "Uyut"
    deadline = time.monotonic() + 2
    while smsc.unbinds < 1 and time.monotonic() < deadline:  # the SMSC's loop reports the unbind a moment after close()
        time.sleep(0.01)
    assert smsc.binds == ["uyut"] and smsc.unbinds == 1  # one bind for the batch, unbound on close


def test_concatenated_parts_carry_a_udh_and_the_udhi_flag():
    [first, second] = segments("k", "a" * 161, Address(1, 1, "79000000001"), Address(5, 0, "Uyut"), receipts=True)
    reference = first.short_message[3]
    assert first.short_message[:6] == bytes([0x05, 0x00, 0x03, reference, 2, 1]) and first.short_message[6:] == b"a" * 153
    assert second.short_message[:6] == bytes([0x05, 0x00, 0x03, reference, 2, 2]) and second.short_message[6:] == b"a" * 8
    assert first.esm_class == second.esm_class == 0x40 and first.registered_delivery == 1
    [single] = segments("k", "a" * 160, Address(1, 1, "79000000001"), Address(5, 0, "Uyut"), receipts=False)
    assert single.esm_class == 0 and single.short_message == b"a" * 160 and single.registered_delivery == 0


def test_receipts_come_back_as_outcomes_with_the_message_key(smsc, tmp_path):
    smsc.stat["79000000002"] = "UNDELIV"
    batch = [message(1, "Привет! " * 20), message(2, "Hi"), message(3, "Hello")]
    channel = sender(smsc, tmp_path)
    try:
        assert [r.status for r in channel.send(batch)] == ["sent"] * 3
        deadline = time.monotonic() + 5
        outcomes = []
        while len(outcomes) < 3 and time.monotonic() < deadline:
            outcomes += channel.drain_outcomes(wait=0.2)
        assert channel.drain_outcomes() == []  # each outcome is given once
    finally:
        channel.close()
    by_key = {o.message_key: o for o in outcomes}
    assert {key: o.type for key, o in by_key.items()} == {batch[0].key: "delivered", batch[1].key: "bounced", batch[2].key: "delivered"}
    assert len(outcomes) == 3  # the 3-part message is delivered once, when its last part is
    assert by_key[batch[1].key].payload["stat"] == "UNDELIV"
    assert by_key[batch[2].key].at.isoformat() == "2026-11-24T10:01:00+00:00"


def test_refusals_are_temporary_or_permanent_by_status_and_bad_numbers_never_leave(smsc, tmp_path):
    smsc.refuse["79000000001"] = smpp34.ESME_RTHROTTLED
    smsc.refuse["79000000002"] = smpp34.ESME_RINVDSTADR
    batch = [message(1, "Hi"), message(2, "Hi"), message(3, "Hi", to="customer@example.com"), message(4, "Hi"), message(5, " ")]
    channel = sender(smsc, tmp_path)
    try:
        results = channel.send(batch)
    finally:
        channel.close()
    assert [r.status for r in results] == ["temporary_failure", "permanent_failure", "permanent_failure", "sent", "permanent_failure"]
    assert "ESME_RTHROTTLED" in results[0].error and "ESME_RINVDSTADR" in results[1].error
    assert "not a phone number" in results[2].error and "empty" in results[4].error
    assert smsc.texts() == {"79000000004": ["Hi"]}


def test_an_idle_bind_is_probed_with_enquire_link_and_reused(smsc, tmp_path):
    channel = sender(smsc, tmp_path, enquire_link=0.05)
    try:
        assert channel.send([message(1, "one")])[0].status == "sent"
        time.sleep(0.2)
        assert channel.send([message(2, "two")])[0].status == "sent"
    finally:
        channel.close()
    assert smsc.binds == ["uyut"]
    assert smsc.texts() == {"79000000001": ["one"], "79000000002": ["two"]}


def test_an_unreachable_smsc_fails_the_batch_temporarily_without_raising(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = plugins.registry().channels["smpp"](
        Channel("sms", "smpp", "sms", 2.9, {"host": "127.0.0.1", "port": port, "system_id": "uyut", "password": "pw-9f3k", "source_addr": "Uyut",
                                             "timeout": 1}), tmp_path)
    results = channel.send([message(1, "Hi"), message(2, "Hi", to="nope")])
    channel.close()
    assert [r.status for r in results] == ["temporary_failure", "permanent_failure"]
    assert f"SMSC 127.0.0.1:{port} not bound" in results[0].error and "pw-9f3k" not in results[0].error


def test_delivery_sends_each_message_once_and_records_receipts(smsc, tmp_path):
    """deliver() itself stores the receipts the bind brought back (the sender is
    a campaignctl.contracts.OutcomeSource); a receipt arriving after one
    delivery is stored by the next."""
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    channel = sender(smsc, tmp_path)
    smsc.refuse["79000000003"] = smpp34.ESME_RINVDSTADR
    due = [DueMessage(message(n, f"Анна, ваш заказ {n} готов " * 4), step=1, cost=2.9 * 2) for n in range(1, 6)]
    keys = [m.key for m in due]
    try:
        assert isinstance(channel, OutcomeSource)
        first = deliver(store, {"sms": channel}, due)
        again = deliver(store, {"sms": channel}, due)  # the next scheduler tick: nothing to send
        deadline = time.monotonic() + 5
        while len(store.outcome_types(keys)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
            deliver(store, {"sms": channel}, due)  # later ticks store receipts that came after
        types = store.outcome_types(keys)
    finally:
        channel.close()
        store.close()
    assert first.counts == {"sms": {SENT: 4, FAILED_PERMANENT: 1}}
    assert again.counts == {"sms": {ALREADY_SENT: 4, FAILED_PERMANENT: 1}}
    assert len(smsc.submitted) == 8  # 4 messages x 2 parts, never twice
    assert {key: set(found) for key, found in types.items()} == {m.key: {"delivered"} for m in due if m.message.customer_id != "3"}


# --------------------------------------------------------------------------- receipts as text


def test_parse_receipt_reads_the_appendix_b_text_and_the_tlvs():
    receipt = parse_receipt(b"id:0123456789 sub:001 dlvrd:000 submit date:2611241000 done date:2611241005 stat:EXPIRED err:041 text:Hi")
    assert receipt == Receipt("0123456789", "EXPIRED", "041", receipt.done_at) and receipt.done_at.isoformat() == "2026-11-24T10:05:00+00:00"
    assert parse_receipt("id:abc stat:delivrd").stat == "DELIVRD"
    assert parse_receipt(b"", {0x001E: b"7F3A\0", 0x0427: bytes([2])}) == Receipt("7F3A", "DELIVRD")
    assert parse_receipt(b"hello, a reply from the customer") is None
