"""Telegram and WhatsApp channels against real HTTP servers on localhost that
answer as the Bot API and the WhatsApp Cloud API document, checking the wire
format; faults (429 with retry hints, 5xx, time-outs) run through
campaignctl.delivery.deliver with a SQLite state store."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Callable

import pytest
from contract.messenger_peers import APP_SECRET, BOT_TOKEN, TEMPLATES, WA_TOKEN, Peer, telegram_ok, wa_ok

from campaignctl import plugins
from campaignctl.contracts import OutgoingMessage
from campaignctl.delivery import DueMessage, deliver
from campaignctl.model import Channel, PluginConfig


@pytest.fixture
def peer():
    started = []

    def start(answer):
        started.append(Peer(answer))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def channel(plugin: str, options: dict, tmp_path):
    return plugins.registry().channels[plugin](Channel(plugin, plugin, plugin, 1.0, options), tmp_path)


# --------------------------------------------------------------------------- Telegram


def tg_message(n: int, name: str = "Anna", url: str | None = "https://uyut.example/bonus?m=k") -> OutgoingMessage:
    parts = {"body": f"{name}, your Uyut points expire at midnight today.", **({"url": url} if url else {})}
    return OutgoingMessage(f"bonus/v1/{n}/0/w1", "bonus", str(n), "telegram", "+7916000000" + str(n % 10), parts, {"template": "bonus_telegram"})


def write_chats(tmp_path, count: int = 20):
    (tmp_path / "chats.csv").write_text("customer_id,chat_id\n" + "".join(f"{n},{5000 + n}\n" for n in range(count)))


def test_telegram_sends_escaped_html_with_a_link_button_to_the_chat(peer, tmp_path):
    server = peer(telegram_ok)
    write_chats(tmp_path)
    sender = channel("telegram", {"token": BOT_TOKEN, "base_url": server.url, "chat_ids": "chats.csv", "button": "Spend points"}, tmp_path)
    results = sender.send([tg_message(1, name="<b>Anna</b> & co")])
    sender.close()
    assert [(r.status, r.provider_id) for r in results] == [("sent", "telegram:6001")]
    path, headers, body = server.requests[0]
    assert path == f"/bot{BOT_TOKEN}/sendMessage" and headers["content-type"] == "application/json"
    assert body == {
        "chat_id": 5001, "parse_mode": "HTML",
        "text": "&lt;b&gt;Anna&lt;/b&gt; &amp; co, your Uyut points expire at midnight today.",
        "reply_markup": {"inline_keyboard": [[{"text": "Spend points", "url": "https://uyut.example/bonus?m=k"}]]},
    }


def test_telegram_documented_errors(peer, tmp_path):
    answers = {
        5001: (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}}),
        5002: (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
        5003: (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}),
        5004: (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}),
    }
    server = peer(lambda path, headers, body: (*answers.get(body["chat_id"], telegram_ok(path, headers, body)[:2]), 0))
    write_chats(tmp_path)
    sender = channel("telegram", {"token": BOT_TOKEN, "base_url": server.url, "chat_ids": "chats.csv"}, tmp_path)
    results = sender.send([tg_message(n) for n in range(1, 6)] + [tg_message(99)])
    sender.close()
    summary = [(r.status, r.retry_after, r.address_invalid) for r in results]
    assert summary == [("temporary_failure", 7.0, False), ("permanent_failure", None, True), ("permanent_failure", None, False),
                       ("temporary_failure", None, False), ("sent", None, False), ("permanent_failure", None, False)]
    assert "chat not found" in results[2].error and "no Telegram chat id for customer 99" in results[5].error
    assert all(BOT_TOKEN not in (r.error or "") for r in results)  # the token is in the URL; never in an error
    assert len(server.requests) == 5  # customer 99 has no chat: nothing was sent


def test_telegram_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="set options.token"):
        channel("telegram", {}, tmp_path)
    (tmp_path / "bad.csv").write_text("customer_id,chat_id\n1,+79161234567\n")
    with pytest.raises(ValueError, match=r"bad.csv:2:1: chat_id is not a Telegram chat id"):
        channel("telegram", {"token": "x", "chat_ids": "bad.csv"}, tmp_path)
    with pytest.raises(ValueError, match="did you mean 'chat_ids'"):
        channel("telegram", {"token": "x", "chat_id": "a.csv"}, tmp_path)


# --------------------------------------------------------------------------- WhatsApp

def wa_options(server, **extra):
    return {"phone_number_id": "106540352242922", "token": WA_TOKEN, "app_secret": APP_SECRET, "base_url": server.url,
            "version": "v21.0", "templates": TEMPLATES, "timeout": 1, **extra}


def wa_message(n: int, name: str = "Anna") -> OutgoingMessage:
    key = f"game/v1/{n}/1/w1"
    parts = {"body": f"{name}, a prize is waiting for you at Uyut: pick one of three boxes https://uyut.example/game?m={key}",
             "url": f"https://uyut.example/game?m={key}"}
    return OutgoingMessage(key, "game", str(n), "whatsapp", f"+7 916 000-00-{n:02d}", parts, {"template": "game_whatsapp"})


def test_whatsapp_sends_the_approved_template_with_the_rendered_values(peer, tmp_path):
    server = peer(wa_ok)
    sender = channel("whatsapp", wa_options(server), tmp_path)
    results = sender.send([wa_message(1, "Анна")])
    sender.close()
    assert [(r.status, r.provider_id) for r in results] == [("sent", "wamid.79160000001")]
    path, headers, body = server.requests[0]
    assert path == "/v21.0/106540352242922/messages" and headers["authorization"] == f"Bearer {WA_TOKEN}"
    assert body == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "79160000001", "type": "template",
        "template": {"name": "uyut_game", "language": {"code": "ru"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Анна"},
                                            {"type": "text", "text": "https://uyut.example/game?m=game/v1/1/1/w1"}]},
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "game/v1/1/1/w1"}]}]},
        "biz_opaque_callback_data": "game/v1/1/1/w1",
    }


def test_whatsapp_error_codes_and_a_drifted_template(peer, tmp_path):
    def error(code, status=400):
        return status, {"error": {"message": f"error {code}", "type": "OAuthException", "code": code,
                                  "error_data": {"messaging_product": "whatsapp", "details": "details"}, "fbtrace_id": "x"}}

    answers = {"79160000001": error(131047), "79160000002": error(131026), "79160000003": error(130429),
               "79160000004": error(80007), "79160000005": error(131056), "79160000006": error(100)}
    server = peer(lambda path, headers, body: (*answers.get(body["to"], wa_ok(path, headers, body)[:2]), 0))
    sender = channel("whatsapp", wa_options(server), tmp_path)
    drifted = OutgoingMessage("game/v1/8/1/w1", "game", "8", "whatsapp", "+79160000008", {"body": "Hi, play now", "url": "x"},
                              {"template": "game_whatsapp"})
    unmapped = OutgoingMessage("x/v1/9/1/w1", "x", "9", "whatsapp", "+79160000009", {"body": "Hi"}, {"template": "other"})
    results = sender.send([wa_message(n) for n in range(1, 8)] + [drifted, unmapped])
    sender.close()
    assert [r.status for r in results] == ["permanent_failure", "permanent_failure", "temporary_failure", "temporary_failure",
                                           "temporary_failure", "permanent_failure", "sent", "permanent_failure", "permanent_failure"]
    assert "(131047)" in results[0].error and "does not fit the approved template" in results[7].error
    assert "no approved WhatsApp template" in results[8].error and len(server.requests) == 7
    assert all(WA_TOKEN not in (r.error or "") for r in results)


def whatsapp_webhook(*statuses: dict) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "statuses": list(statuses)}}]}]}).encode()


def status(kind: str, key: str | None, **extra) -> dict:
    found = {"id": "wamid.X", "status": kind, "timestamp": "1764583200", "recipient_id": "79160000001", **extra}
    if key:
        found["biz_opaque_callback_data"] = key
    return found


def test_whatsapp_webhooks_are_verified_and_become_outcomes(peer, tmp_path):
    sender = channel("whatsapp", wa_options(peer(wa_ok)), tmp_path)
    body = whatsapp_webhook(status("sent", "k1"), status("delivered", "k1"), status("read", "k1"), status("delivered", None),
                            status("failed", "k2", errors=[{"code": 131026, "title": "Message undeliverable"}]))
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    outcomes = sender.parse_webhook(body, {"x-hub-signature-256": signature})
    assert [(o.message_key, o.type, o.at.isoformat()) for o in outcomes] == [
        ("k1", "delivered", "2025-12-01T10:00:00+00:00"), ("k1", "opened", "2025-12-01T10:00:00+00:00"),
        ("k2", "bounced", "2025-12-01T10:00:00+00:00")]
    assert outcomes[2].payload["errors"] == [{"code": 131026, "title": "Message undeliverable"}]
    for bad in ({"x-hub-signature-256": signature.replace("a", "b", 1) if "a" in signature[7:] else "sha256=00"}, {}):
        with pytest.raises(PermissionError):
            sender.parse_webhook(body, bad)
    with pytest.raises(ValueError):
        sender.parse_webhook(b"not json", {"x-hub-signature-256": "sha256=" + hmac.new(APP_SECRET.encode(), b"not json", hashlib.sha256).hexdigest()})
    sender.close()


def test_whatsapp_answers_metas_webhook_check_only_with_the_right_verify_token(peer, tmp_path):
    """Meta's handshake: GET ?hub.mode=subscribe&hub.verify_token=..&hub.challenge=..;
    the challenge goes back only when the token is the channel's verify_token."""
    sender = channel("whatsapp", {**wa_options(peer(wa_ok)), "verify_token": "meta-check-123"}, tmp_path)
    asked = {"hub.mode": "subscribe", "hub.verify_token": "meta-check-123", "hub.challenge": "1158201444"}
    assert sender.verify_subscription(asked) == "1158201444"
    for wrong in ({**asked, "hub.verify_token": "meta-check-124"}, {**asked, "hub.mode": "unsubscribe"},
                  {k: v for k, v in asked.items() if k != "hub.verify_token"}, {**asked, "hub.challenge": ""}):
        assert sender.verify_subscription(wrong) is None
    sender.close()
    unset = channel("whatsapp", wa_options(peer(wa_ok)), tmp_path)  # no verify_token: nothing is confirmed
    assert unset.verify_subscription(asked) is None
    unset.close()


# --------------------------------------------------------------------------- faults through deliver()


def flaky(ok: Callable, fault_for: dict[str, list]) -> Callable:
    """Answers each recipient's queued faults first, then ``ok``."""
    def answer(path, headers, body):
        recipient = json.dumps(body.get("chat_id", body.get("to")))
        queue = fault_for.get(recipient)
        return queue.pop(0) if queue else ok(path, headers, body)
    return answer


@pytest.mark.parametrize("plugin", ["telegram", "whatsapp"])
def test_faults_for_a_while_lose_nothing_and_send_nothing_twice(plugin, peer, tmp_path):
    many = 12
    if plugin == "telegram":
        too_many = (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}, 0)
        broken = (500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}, 0)
        recipients = [json.dumps(5000 + n) for n in range(many)]
        ok = telegram_ok
    else:
        too_many = (400, {"error": {"message": "Rate limit hit", "type": "OAuthException", "code": 130429}}, 0)
        broken = (503, {"error": {"message": "Service unavailable", "code": 131000}}, 0)
        recipients = [json.dumps(f"791600000{n:02d}") for n in range(many)]
        ok = wa_ok
    hang = (200, {}, 1.5)  # longer than the client's 1 s time-out
    faults = {recipient: [too_many, broken, hang][: n % 4] for n, recipient in enumerate(recipients)}
    server = peer(flaky(ok, faults))
    write_chats(tmp_path, many)
    options = ({"token": BOT_TOKEN, "base_url": server.url, "chat_ids": "chats.csv", "timeout": 1} if plugin == "telegram"
               else wa_options(server))
    sender = channel(plugin, options, tmp_path)
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    messages = [tg_message(n) if plugin == "telegram" else wa_message(n) for n in range(many)]
    due = [DueMessage(OutgoingMessage(m.key, m.campaign, m.customer_id, plugin, m.to, m.parts, m.metadata), 0, 1.0) for m in messages]
    waits: list[float] = []
    hung = [m.key for n, m in enumerate(messages) if n % 4 == 3]  # the time-out came after the request was sent
    try:
        report = deliver(store, {plugin: sender}, due, max_attempts=5, sleep=waits.append)
        again = deliver(store, {plugin: sender}, due, sleep=waits.append)  # the next scheduler tick
        # A person settles them by asking the provider: the hung requests never arrived
        # (an answer that was only late on a busy machine did).
        arrived = {key for key, chat in zip((d.key for d in due), recipients) if server.delivered[chat]}
        store.resolve_in_doubt({key: ("found" if key in arrived else None) for key in report.in_doubt})
        settled = deliver(store, {plugin: sender}, due, sleep=waits.append)
    finally:
        sender.close()
    assert set(hung) <= set(report.in_doubt) and report.total("sent") == many - len(report.in_doubt)
    assert again.total("already_sent") == report.total("sent") and again.total("in_doubt") == len(report.in_doubt)  # never re-sent blindly
    assert settled.total("sent") == len(hung) and not settled.in_doubt
    assert sorted(server.delivered) == sorted(recipients) and set(server.delivered.values()) == {1}  # each once, none lost
    assert {row.status for row in store.messages([d.key for d in due])} == {"sent"}
    assert len(server.requests) == many + sum(n % 4 for n in range(many))  # every fault was retried, nothing more
    if plugin == "telegram":
        assert waits[0] >= 1.0  # parameters.retry_after was honoured before the next round
    store.close()


def test_a_customer_who_blocked_the_bot_gets_a_bounce_through_deliver(peer, tmp_path):
    blocked = (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}, 0)
    server = peer(flaky(telegram_ok, {json.dumps(5001): [blocked]}))
    write_chats(tmp_path)
    sender = channel("telegram", {"token": BOT_TOKEN, "base_url": server.url, "chat_ids": "chats.csv"}, tmp_path)
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    due = [DueMessage(tg_message(n), 0, 0.4) for n in (1, 2)]
    try:
        report = deliver(store, {"telegram": sender}, due, sleep=lambda _: None)
    finally:
        sender.close()
    assert report.total("sent") == 1 and report.total("failed_permanent") == 1
    assert [(o.type, o.payload.get("address_invalid")) for o in store.outcomes(due[0].key)] == [("bounced", True)]
    assert store.outcomes(due[1].key) == []
    store.close()
