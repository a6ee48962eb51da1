"""The sms_http channel against a real HTTP gateway on localhost that checks
the wire format, and the faults a gateway has: 429 with Retry-After, 5xx and
time-outs, through campaignctl.delivery with a SQLite ledger."""

from __future__ import annotations

import time

import pytest
from contract.sms_peers import GATEWAY_TOKEN as TOKEN
from contract.sms_peers import Gateway

from campaignctl import plugins
from campaignctl.contracts import OutgoingMessage
from campaignctl.delivery import ALREADY_SENT, FAILED_PERMANENT, IN_DOUBT, SENT, Backoff, DueMessage, deliver
from campaignctl.model import Channel, PluginConfig

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def gateway():
    peer = Gateway().start()
    yield peer
    peer.stop()


def options(gateway: Gateway, **extra) -> dict:
    return {
        "url": gateway.url + "/api/sms",
        "headers": {"Authorization": "Bearer ${env:SMS_TOKEN}"},
        "body": {"messages": [{"phone": "{to}", "text": "{text}", "from": "{sender}", "client_ref": "{key}", "parts": "{parts}"}]},
        "sender": "Uyut",
        "id_path": "result.sms_id",
        "timeout": 2,
        **extra,
    }


def open_sender(opts: dict, tmp_path, environ=None):
    """Opened as apply opens it: ${env:...} resolved by campaignctl.connect."""
    from campaignctl.secrets import resolve

    resolved, problems = resolve(opts, environ or {"SMS_TOKEN": TOKEN})
    assert not problems
    return plugins.registry().channels["sms_http"](Channel("sms", "sms_http", "sms", 2.9, resolved), tmp_path)


def message(n: int, text: str = "Анна, скидка 10% до воскресенья", to: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(f"winback/v3/{n}/1/2026-11-24", "winback", str(n), "sms", to or f"+7 900 000-{n:04d}", {"body": text})


def test_each_sms_is_one_request_in_the_configured_shape(gateway, tmp_path):
    sender = open_sender(options(gateway), tmp_path)
    text = "Анна, мы скучаем! Ваша скидка 15% ждёт вас в магазинах Уют до конца недели."
    try:
        results = sender.send([message(1, text), message(2, "Hi {you} €5"), message(3, to="+1 555 0100 999")])
    finally:
        sender.close()
    assert [(r.status, r.provider_id) for r in results] == [
        ("sent", f"gw-{message(1).key}"), ("sent", f"gw-{message(2).key}"), ("permanent_failure", None)]
    assert "HTTP 400" in results[2].error and "unsupported destination" in results[2].error
    assert sorted(gateway.accepted, key=lambda sms: sms["client_ref"]) == [  # they arrive in any order
        {"phone": "+79000000001", "text": text, "from": "Uyut", "client_ref": message(1).key, "parts": 2},  # parts stays a number
        {"phone": "+79000000002", "text": "Hi {you} €5", "from": "Uyut", "client_ref": message(2).key, "parts": 1},
    ]


def test_a_form_gateway_gets_form_fields(gateway, tmp_path):
    opts = options(gateway, url=gateway.url + "/form", format="form",
                   body={"phone": "{to}", "text": "{text}", "from": "{sender}", "client_ref": "{key}"})
    sender = open_sender(opts, tmp_path)
    try:
        [result] = sender.send([message(1, "Привет & до встречи = 100%")])
    finally:
        sender.close()
    assert result.status == "sent"
    assert gateway.accepted == [{"phone": "+79000000001", "text": "Привет & до встречи = 100%", "from": "Uyut", "client_ref": message(1).key}]


def test_requests_run_concurrently_up_to_the_limit_over_kept_connections(gateway, tmp_path):
    gateway.delay = 0.1
    sender = open_sender(options(gateway, concurrency=4), tmp_path)
    try:
        started = time.monotonic()
        first = sender.send([message(n) for n in range(12)])
        elapsed = time.monotonic() - started
        second = sender.send([message(n) for n in range(12, 20)])
    finally:
        sender.close()
    assert [r.status for r in first + second] == ["sent"] * 20
    assert gateway.most_concurrent == 4
    assert elapsed < 12 * 0.1 * 0.6  # 3 rounds of 4, not 12 one after another
    assert gateway.connections <= 4  # keep-alive: the second batch reuses them


def test_bad_options_are_refused_with_what_to_do(gateway, tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'ulr' \(did you mean 'url'\?\)"):
        open_sender({**options(gateway), "ulr": "x"}, tmp_path)
    with pytest.raises(ValueError, match=r"'body' must be a mapping that places \{to\} and \{text\}"):
        open_sender({**options(gateway), "body": {"phone": "{to}"}}, tmp_path)
    with pytest.raises(ValueError, match="'method' must be one of POST, PUT, PATCH"):
        open_sender({**options(gateway), "method": "GET"}, tmp_path)


def test_statuses_map_to_sent_temporary_and_permanent_and_secrets_stay_out(gateway, tmp_path):
    gateway.faults.extend([("status", 429, {"Retry-After": "7"}), ("status", 502, {}), ("status", 422, {})])
    sender = open_sender(options(gateway, concurrency=1), tmp_path)
    try:
        results = sender.send([message(n) for n in range(4)])
        wrong = open_sender(options(gateway), tmp_path, {"SMS_TOKEN": "sms-wrong-key"})
        [unauthorised] = wrong.send([message(9)])
        wrong.close()
    finally:
        sender.close()
    assert [r.status for r in results] == ["temporary_failure", "temporary_failure", "permanent_failure", "sent"]
    assert results[0].retry_after == 7 and "HTTP 429" in results[0].error and "HTTP 502" in results[1].error
    assert unauthorised.status == "temporary_failure" and "HTTP 401" in unauthorised.error and "credentials" in unauthorised.error
    assert "sms-wrong-key" not in unauthorised.error and TOKEN not in repr(results)


def test_faults_for_a_while_lose_nothing_and_send_nothing_twice(gateway, tmp_path):
    """429 with Retry-After, 5xx and time-outs on the first requests: every
    message arrives exactly once, the ledger says sent, a rerun sends nothing.
    A request that timed out after it was sent is in doubt, never re-sent
    blindly; once a person settles it (the gateway never took it) it goes once."""
    gateway.faults.extend([("status", 429, {"Retry-After": "1"}), ("status", 500, {}), ("hang", 1.5), ("status", 503, {}),
                           ("status", 429, {"Retry-After": "2"}), ("hang", 1.5), ("status", 502, {})])
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    sender = open_sender(options(gateway, timeout=0.5, concurrency=2), tmp_path)
    due = [DueMessage(message(n), step=1, cost=5.8) for n in range(10)] + [DueMessage(message(99, to="+1 555 0100 999"), step=1, cost=5.8)]
    waits: list[float] = []
    try:
        report = deliver(store, {"sms": sender}, due, batch_size=4, max_attempts=6, backoff=Backoff(initial=0.01, maximum=0.05),
                         sleep=waits.append)
        again = deliver(store, {"sms": sender}, due, sleep=waits.append)
        # A person settles them by asking the gateway: it never took the two it hung on
        # (and took any that only answered slowly on a busy machine).
        store.resolve_in_doubt({key: ("found" if key in gateway.keys() else None) for key in report.in_doubt})
        settled = deliver(store, {"sms": sender}, due, sleep=waits.append)
        ledger = {m.key: m.status for m in store.messages([d.key for d in due])}
    finally:
        sender.close()
        store.close()
    doubtful = len(report.in_doubt)  # the 2 hangs, more only if an answer was late
    assert doubtful >= 2 and report.counts == {"sms": {SENT: 10 - doubtful, IN_DOUBT: doubtful, FAILED_PERMANENT: 1}}, report
    assert again.counts["sms"] == {ALREADY_SENT: 10 - doubtful, IN_DOUBT: doubtful, FAILED_PERMANENT: 1}  # never sent again blindly
    assert settled.counts["sms"][SENT] == 2 and not settled.in_doubt
    assert sorted(gateway.keys()) == sorted(d.key for d in due[:10])  # each exactly once at the peer
    assert len(gateway.accepted) == 10
    assert {str(status) for key, status in ledger.items() if key != due[-1].key} == {"sent"}
    assert len(waits) >= 1 and not gateway.faults  # it retried through every fault
