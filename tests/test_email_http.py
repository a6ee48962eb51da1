"""The email_http channel against a real HTTP server on localhost that checks
what goes over the wire: method, path, headers and the JSON body."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from campaignctl_email_http.sender import HttpEmailSender, HttpSettings, idempotency_key
from contract.channel_peers import HTTP_TOKEN, free_port, http_peer

from campaignctl import plugins
from campaignctl.contracts import OutgoingMessage
from campaignctl.mime import ConfigError, message_id
from campaignctl.model import Channel

AMP = "<!doctype html><html ⚡4email><body>Корзина</body></html>"


def open_http(options: dict, root: Path = Path(".")):
    return plugins.registry().channels["email_http"](Channel("email", "email_http", "email", 0.15, options), root)


def message(n: int = 1, to: str | None = None, **parts: str) -> OutgoingMessage:
    return OutgoingMessage(
        f"birthday/v1/{n}/0/2026-11-24", "birthday", str(n), "email", to or f"customer{n}@uyut.example",
        {"subject": "С днём рождения, Анна! 🎂", "text": "Дарим 500 бонусов.\n", "html": "<p>Дарим <b>500</b> бонусов.</p>", **parts},
        {"list_unsubscribe": [f"https://uyut.example/u/{n}", "mailto:unsubscribe@uyut.example"]},
    )


def send(options: dict, messages: list[OutgoingMessage]):
    sender = open_http(options)
    try:
        return sender.send(messages)
    finally:
        sender.close()


def test_the_request_carries_the_message_as_json_with_auth_and_idempotency_key():
    with http_peer() as peer:
        (result,) = send(peer.options(reply_to="help@uyut.example"), [message(1, amp=AMP)])
    (request,) = peer.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["authorization"] == f"Bearer {HTTP_TOKEN}"
    assert request.headers["idempotency-key"] == "birthday/v1/1/0/2026-11-24"
    (sent,) = request.json()["messages"]
    assert sent == {
        "idempotency_key": "birthday/v1/1/0/2026-11-24",
        "from": "Uyut Home <news@uyut.example>",
        "reply_to": "help@uyut.example",
        "to": "customer1@uyut.example",
        "subject": "С днём рождения, Анна! 🎂",
        "text": "Дарим 500 бонусов.\n",
        "html": "<p>Дарим <b>500</b> бонусов.</p>",
        "amp": AMP,
        "headers": {
            "Message-ID": message_id("birthday/v1/1/0/2026-11-24", "uyut.example"),
            "List-Unsubscribe": "<https://uyut.example/u/1>, <mailto:unsubscribe@uyut.example>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "tags": {"campaign": "birthday", "customer_id": "1"},
    }
    assert result.status == "sent" and result.provider_id == "esp-0-0"


def test_batches_follow_batch_size_on_one_kept_alive_connection():
    with http_peer() as peer:
        batch = [message(n) for n in range(5)]
        results = send(peer.options(batch_size=2), batch)
    assert [len(r.json()["messages"]) for r in peer.requests] == [2, 2, 1]
    assert [r.provider_id for r in results] == ["esp-0-0", "esp-0-1", "esp-1-0", "esp-1-1", "esp-2-0"]
    keys = [r.headers["idempotency-key"] for r in peer.requests]
    assert keys[0] == "batch-" + hashlib.sha256(f"{batch[0].key}\n{batch[1].key}".encode()).hexdigest()
    assert keys[2] == batch[4].key
    assert peer.connections == 1


def test_a_batch_retried_carries_the_same_idempotency_key():
    keys = [message(n).key for n in range(3)]
    assert idempotency_key(keys) == idempotency_key(list(keys)) != idempotency_key(keys[:2])


def test_a_message_refused_inside_a_2xx_answer_fails_alone():
    with http_peer() as peer:
        results = send(peer.options(), [message(1), message(2, to="nobody@invalid.example"), message(3)])
    assert [r.status for r in results] == ["sent", "permanent_failure", "sent"]
    assert results[1].error == "mailbox does not exist"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, "temporary_failure"), (503, "temporary_failure"), (429, "temporary_failure"), (401, "temporary_failure"),
     (400, "permanent_failure"), (422, "permanent_failure"), (404, "permanent_failure")],
)
def test_answers_map_to_temporary_and_permanent(status, expected):
    with http_peer() as peer:
        peer.answers.append((status, {}, {"error": f"provider says {status}"}))
        results = send(peer.options(), [message(1), message(2)])
    assert [r.status for r in results] == [expected] * 2
    assert f"answered {status}: provider says {status}" in results[0].error
    assert len(peer.requests) == 1


def test_the_api_key_never_appears_in_an_error():
    with http_peer() as peer:
        (result,) = send(peer.options(api_key="sk_wrong_0042"), [message(1)])
    assert result.status == "temporary_failure" and "401" in result.error
    assert "sk_wrong_0042" not in result.error
    assert "sk_wrong_0042" not in repr(HttpSettings.from_options(peer.options(api_key="sk_wrong_0042"), Path(".")))


def test_retry_after_is_reported_and_waited_for_before_the_next_request():
    waits: list[float] = []
    now = [100.0]
    with http_peer() as peer:
        sender = HttpEmailSender(HttpSettings.from_options(peer.options(), Path(".")), clock=lambda: now[0], sleep=waits.append)
        peer.answers.append((429, {"Retry-After": "7"}, {"error": "slow down"}))
        first = sender.send([message(1)])
        now[0] += 2
        second = sender.send([message(1)])
        sender.close()
    assert first[0].status == "temporary_failure" and first[0].retry_after == 7.0
    assert waits == [5.0]  # 7 s asked, 2 s already passed
    assert second[0].status == "sent"
    assert len(peer.requests) == 2


def test_a_retry_after_longer_than_allowed_fails_without_a_request():
    with http_peer() as peer:
        sender = HttpEmailSender(HttpSettings.from_options(peer.options(max_retry_after=30), Path(".")), sleep=lambda s: None)
        peer.answers.append((503, {"Retry-After": "3600"}, {"error": "maintenance"}))
        sender.send([message(1)])
        (result,) = sender.send([message(2)])
        sender.close()
    assert result.status == "temporary_failure" and "Retry-After" in result.error and result.retry_after > 3500
    assert len(peer.requests) == 1


def test_a_connection_the_server_closes_is_reopened():
    with http_peer() as peer:
        peer.answers.append((200, {"Connection": "close"}, {"results": [{"id": "esp-x"}]}))
        results = send(peer.options(batch_size=1), [message(1), message(2)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert peer.connections == 2


def test_an_unreachable_provider_is_a_temporary_failure():
    results = send({"url": f"http://127.0.0.1:{free_port()}/v1/messages", "from": "news@uyut.example", "timeout": 2}, [message(1), message(2)])
    assert [r.status for r in results] == ["temporary_failure"] * 2
    assert "ConnectionRefusedError" in results[0].error


def test_a_message_that_cannot_be_an_email_is_not_posted():
    with http_peer() as peer:
        results = send(peer.options(), [message(1, to="anna@"), message(2, subject=""), message(3)])
    assert [r.status for r in results] == ["permanent_failure", "permanent_failure", "sent"]
    assert results[0].address_invalid and not results[1].address_invalid
    assert [m["idempotency_key"] for m in peer.received_messages()] == [message(3).key]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"from": "news@uyut.example"}, "'url' must be an http(s) URL"),
        ({"url": "ftp://x/y", "from": "news@uyut.example"}, "'url' must be an http(s) URL"),
        ({"url": "https://api.example/v1", "from": "news@uyut.example", "batch_size": 0}, "'batch_size' must be an integer of at least 1"),
        ({"url": "https://api.example/v1", "from": "news@uyut.example", "auth_header": "X Key"}, "'auth_header' must be a header name"),
        ({"url": "https://api.example/v1", "from": "news@uyut.example", "apikey": "k"}, "'apikey' (did you mean 'api_key'?)"),
    ],
)
def test_bad_options_are_refused_by_name(options, error):
    with pytest.raises(ConfigError) as caught:
        open_http(options)
    assert error in str(caught.value)


def test_a_raw_api_key_header_without_a_scheme():
    with http_peer() as peer:
        peer.answers.append((200, {}, {"id": "esp-raw"}))
        (result,) = send(peer.options(auth_header="X-Api-Key", auth_scheme=""), [message(1)])
    assert peer.requests[0].headers["x-api-key"] == HTTP_TOKEN and "authorization" not in peer.requests[0].headers
    assert result.provider_id == "esp-raw"
