"""The smtp channel against a real aiosmtpd server on localhost: what arrives is
parsed back with the standard library and checked, DKIM signatures are
verified with dkimpy, TLS uses a throw-away CA (trustme)."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections import deque
from pathlib import Path

import dkim
import pytest
import trustme
from contract.channel_peers import SMTP_PASSWORD, SMTP_USER, smtp_peer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from campaignctl import plugins
from campaignctl.contracts import OutgoingMessage
from campaignctl.delivery import FAILED_PERMANENT, SENT, Backoff, DueMessage, deliver
from campaignctl.mime import ConfigError, message_id
from campaignctl.model import Channel, PluginConfig
from campaignctl.state import MessageStatus, locked

AMP = '<!doctype html><html ⚡4email data-css-strict><head><meta charset="utf-8"></head><body>Корзина</body></html>'


def open_smtp(options: dict, root: Path = Path(".")):
    return plugins.registry().channels["smtp"](Channel("email", "smtp", "email", 0.15, options), root)


def message(n: int = 1, to: str | None = None, **parts: str) -> OutgoingMessage:
    return OutgoingMessage(
        f"abandoned_cart/v2/{n}/0/2026-11-24", "abandoned_cart", str(n), "email", to or f"customer{n}@uyut.example",
        {
            "subject": "Анна, вы забыли плед «Уют» 🧣",
            "text": "Здравствуйте, Анна!\nПлед ждёт вас в корзине.\n",
            "html": "<p>Здравствуйте, Анна! Плед ждёт вас <a href=\"https://uyut.example/cart\">в корзине</a>.</p>",
            **parts,
        },
        {"list_unsubscribe": [f"https://uyut.example/unsubscribe/{n}?t=abc", "mailto:unsubscribe@uyut.example?subject=unsubscribe"]},
    )


def send(options: dict, messages: list[OutgoingMessage], root: Path = Path(".")):
    sender = open_smtp(options, root)
    try:
        return sender.send(messages), sender
    finally:
        sender.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


# --- what arrives -----------------------------------------------------------------------


def test_the_message_arrives_with_its_headers_and_parts_in_order():
    with smtp_peer() as peer:
        (result,), _ = send(peer.options(reply_to='"Уют, поддержка" <help@uyut.example>'), [message(7, amp=AMP)])
    assert result.status == "sent", result
    (mail,) = peer.received
    parsed = mail.message
    assert mail.mail_from == "news@uyut.example" and mail.rcpt_tos == ("customer7@uyut.example",)
    assert parsed["Subject"] == "Анна, вы забыли плед «Уют» 🧣"
    assert parsed["From"].addresses[0].addr_spec == "news@uyut.example"
    assert parsed["Reply-To"].addresses[0].display_name == "Уют, поддержка"
    assert parsed["To"] == "customer7@uyut.example"
    assert parsed["Message-ID"] == result.provider_id == message_id("abandoned_cart/v2/7/0/2026-11-24", "uyut.example")
    assert parsed["X-Campaignctl-Key"] == "abandoned_cart/v2/7/0/2026-11-24"
    assert parsed["Date"].datetime.tzinfo is not None
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/x-amp-html", "text/html"]
    text, amp, html = (part.get_content().replace("\r\n", "\n") for part in parsed.iter_parts())
    assert text == "Здравствуйте, Анна!\nПлед ждёт вас в корзине.\n"
    assert "⚡4email" in amp and "Корзина" in amp
    assert 'href="https://uyut.example/cart"' in html
    # 7-bit on the wire: no 8BITMIME needed, and the raw subject is RFC 2047 encoded
    assert mail.data.isascii() and b"Subject: =?utf-8?" in mail.data


def test_a_key_longer_than_a_header_line_reads_back_as_it_was_given():
    from dataclasses import replace

    long_key = "order_confirmation_recommendations/daf01d0264e7/374/0/20261129T162444Z"  # as the planner makes them
    unusual = "promo/v1/7/0/2026-12-01 10:00"  # a space: not safe to set raw, so hashed like a non-ASCII key
    with smtp_peer() as peer:
        send(peer.options(), [replace(message(1), key=long_key), replace(message(2), key=unusual)])
    first, second = peer.received
    assert first.key == long_key and f"\r\nX-Campaignctl-Key: {long_key}\r\n".encode() in first.data
    assert second.key == hashlib.sha256(unusual.encode()).hexdigest()


def test_list_unsubscribe_offers_one_click_when_an_https_uri_is_given():
    with smtp_peer() as peer:
        long_link = message(1)
        long_link = OutgoingMessage(
            long_link.key, long_link.campaign, long_link.customer_id, long_link.channel, long_link.to, long_link.parts,
            {"list_unsubscribe": ["https://uyut.example/unsubscribe/" + "x" * 150]},
        )
        mailto_only = OutgoingMessage("k/2", "c", "2", "email", "b@uyut.example", message().parts, {"list_unsubscribe": ["mailto:u@uyut.example"]})
        none = OutgoingMessage("k/3", "c", "3", "email", "c@uyut.example", message().parts)
        send(peer.options(), [message(1), long_link, mailto_only, none])
    first, long_one, mailto, plain = (mail.message for mail in peer.received)
    assert first["List-Unsubscribe"] == "<https://uyut.example/unsubscribe/1?t=abc>, <mailto:unsubscribe@uyut.example?subject=unsubscribe>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert long_one["List-Unsubscribe"] == "<https://uyut.example/unsubscribe/" + "x" * 150 + ">"  # never encoded or split
    assert mailto["List-Unsubscribe"] == "<mailto:u@uyut.example>" and mailto["List-Unsubscribe-Post"] is None
    assert plain["List-Unsubscribe"] is None


def test_a_local_http_unsubscribe_uri_is_listed_without_one_click():
    # tracking.base_url may be http://127.0.0.1 for testing (the project schema allows it)
    local = ["http://127.0.0.1:8080/mail/u/tok", "mailto:unsubscribe@uyut.example"]
    with smtp_peer() as peer:
        (result,), _ = send(peer.options(), [OutgoingMessage("k/1", "c", "1", "email", "a@uyut.example", message().parts, {"list_unsubscribe": local})])
    assert result.status == "sent", result
    (mail,) = peer.received
    assert mail.message["List-Unsubscribe"] == "<http://127.0.0.1:8080/mail/u/tok>, <mailto:unsubscribe@uyut.example>"
    assert mail.message["List-Unsubscribe-Post"] is None  # providers POST one-click to https only


def test_a_retry_carries_the_same_message_id():
    with smtp_peer() as peer:
        send(peer.options(), [message(3)])
        send(peer.options(), [message(3)])
    first, second = peer.received
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.message["Message-ID"].endswith("@uyut.example>")


def test_an_html_only_message_gets_a_text_alternative():
    with smtp_peer() as peer:
        html_only = message(1)
        html_only = OutgoingMessage(html_only.key, "c", "1", "email", html_only.to, {"subject": "Hi", "html": "<p>Hello <b>Anna</b></p>"})
        (result,), _ = send(peer.options(), [html_only])
    assert result.status == "sent"
    parts = list(peer.received[0].message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "Hello Anna"


@pytest.mark.parametrize(
    ("to", "parts", "reason"),
    [
        ("anna@uyut", {}, "not an e-mail address"),
        ("anna@uyut.example\r\nBcc: all@uyut.example", {}, "not a single e-mail address"),
        ("customer@uyut.example", {"subject": "Hi\r\nBcc: all@uyut.example"}, "subject"),
        ("customer@uyut.example", {"subject": ""}, "no subject"),
        ("customer@uyut.example", {"html": "", "amp": AMP}, "AMP part needs an html part"),
    ],
)
def test_a_message_that_cannot_be_an_email_fails_alone(to, parts, reason):
    with smtp_peer() as peer:
        results, _ = send(peer.options(), [message(1), message(2, to=to, **parts), message(3)])
    assert [r.status for r in results] == ["sent", "permanent_failure", "sent"]
    assert reason in results[1].error
    assert [mail.key for mail in peer.received] == [message(1).key, message(3).key]


# --- TLS and login --------------------------------------------------------------------


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_with_login(security, server_context, ca_file):
    with smtp_peer(security, server_context, auth=True) as peer:
        options = peer.options(security=security, username=SMTP_USER, password=SMTP_PASSWORD, ca_file=ca_file)
        results, _ = send(options, [message(1), message(2)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert [(mail.tls, mail.authenticated_as) for mail in peer.received] == [(True, SMTP_USER)] * 2


def test_a_refused_login_fails_the_batch_temporarily_without_showing_the_password(server_context, ca_file):
    with smtp_peer("starttls", server_context, auth=True) as peer:
        options = peer.options(security="starttls", username=SMTP_USER, password="wrong-password-4711", ca_file=ca_file)
        results, _ = send(options, [message(1), message(2)])
    assert [r.status for r in results] == ["temporary_failure"] * 2
    assert "login" in results[0].error and "535" in results[0].error
    assert all("wrong-password-4711" not in r.error for r in results)
    assert peer.received == []


def test_an_untrusted_certificate_is_refused(server_context):
    with smtp_peer("tls", server_context) as peer:
        (result,), _ = send(peer.options(security="tls"), [message(1)])  # no ca_file: the system CAs do not know trustme's
    assert result.status == "temporary_failure"
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert peer.received == []


def test_a_server_without_starttls_is_not_used_in_clear():
    with smtp_peer("none") as peer:
        (result,), _ = send(peer.options(security="starttls"), [message(1)])
    assert result.status == "temporary_failure" and "does not offer STARTTLS" in result.error
    assert peer.received == []


# --- connections and rate -------------------------------------------------------------


def test_one_connection_serves_every_batch_until_close():
    with smtp_peer() as peer:
        sender = open_smtp(peer.options())
        for batch in range(3):
            assert {r.status for r in sender.send([message(batch * 10 + n) for n in range(5)])} == {"sent"}
        sender.close()
        sender.close()
        assert peer.connections == 1
        assert len(peer.received) == 15


def test_max_messages_per_connection_opens_a_new_connection():
    with smtp_peer() as peer:
        results, _ = send(peer.options(max_messages_per_connection=2), [message(n) for n in range(5)])
    assert {r.status for r in results} == {"sent"}
    assert peer.connections == 3


def test_a_connection_the_server_dropped_is_reopened():
    with smtp_peer() as peer:
        sender = open_smtp(peer.options())
        sender.send([message(1)])
        peer.drop_connections()  # as an idle timeout at the server would
        time.sleep(0.05)
        results = sender.send([message(2), message(3)])
        sender.close()
    assert [r.status for r in results] == ["sent", "sent"]
    assert peer.connections == 2
    assert len(peer.received) == 3


def test_an_unreachable_server_fails_the_batch_temporarily_at_once():
    from contract.channel_peers import free_port

    started = time.monotonic()
    results, _ = send({"host": "127.0.0.1", "port": free_port(), "security": "none", "from": "news@uyut.example"}, [message(n) for n in range(20)])
    assert [r.status for r in results] == ["temporary_failure"] * 20
    assert "ConnectionRefusedError" in results[0].error
    assert time.monotonic() - started < 2  # the rest of the batch does not knock again


def test_the_rate_limit_is_honoured():
    rate, count = 10, 15  # a burst of 10, then one message every tenth of a second
    with smtp_peer() as peer:
        started = time.monotonic()
        results, _ = send(peer.options(rate_per_second=rate), [message(n) for n in range(count)])
        elapsed = time.monotonic() - started
    assert {r.status for r in results} == {"sent"}
    # message n may leave no sooner than (n + 1 - burst) / rate seconds after the start
    earliest = [max(0.0, (n + 1 - rate) / rate) for n in range(count)]
    late_enough = [arrival - started >= bound - 0.01 for arrival, bound in zip(peer.handler.arrivals, earliest)]
    assert all(late_enough), list(zip(peer.handler.arrivals, earliest))
    assert elapsed >= (count - rate) / rate - 0.01


# --- DKIM -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key():
    """A fresh RSA key: the private PEM for the channel, the DNS TXT record for the verifier."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def dns(record: bytes):
    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"s2026._domainkey.uyut.example." else None

    return txt


def test_the_dkim_signature_verifies_and_covers_list_unsubscribe(dkim_key, tmp_path):
    private, record = dkim_key
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(private)
    with smtp_peer() as peer:
        options = peer.options(dkim={"domain": "uyut.example", "selector": "s2026", "private_key_file": "dkim.pem"})
        (result,), _ = send(options, [message(1, amp=AMP)], root=tmp_path)
    assert result.status == "sent"
    data = peer.received[0].data
    assert dkim.verify(data, dnsfunc=dns(record))
    signature = dkim.DKIM(data)
    signature.verify(dnsfunc=dns(record))
    signed = {name.decode() for name in signature.include_headers}
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"} <= signed
    tampered = data.replace(b"unsubscribe/1?t=abc", b"unsubscribe/2?t=abc")
    assert tampered != data and not dkim.verify(tampered, dnsfunc=dns(record))


def test_an_inline_dkim_key_from_the_environment_signs(dkim_key, monkeypatch):
    from campaignctl.secrets import resolve

    private, record = dkim_key
    monkeypatch.setenv("DKIM_PRIVATE_KEY", private)
    with smtp_peer() as peer:
        options, problems = resolve(peer.options(dkim={"domain": "uyut.example", "selector": "s2026", "private_key": "${env:DKIM_PRIVATE_KEY}"}), __import__("os").environ)
        assert problems == []
        send(options, [message(1)])
    assert dkim.verify(peer.received[0].data, dnsfunc=dns(record))


@pytest.mark.parametrize(
    ("dkim_options", "error"),
    [
        ({"domain": "uyut.example", "selector": "s1", "private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"}, "cannot sign"),
        ({"domain": "uyut.example", "selector": "s1"}, "exactly one of 'private_key'"),
        ({"domain": "uyut.example", "selector": "s1", "private_key_file": "missing.pem"}, "cannot read 'private_key_file'"),
        ({"domain": "uyut.example", "selctor": "s1", "private_key_file": "k.pem"}, "'selctor' (did you mean 'selector'?)"),
    ],
)
def test_a_bad_dkim_setting_is_refused_when_the_channel_opens(dkim_options, error, tmp_path):
    with pytest.raises(ConfigError) as caught:
        open_smtp({"host": "127.0.0.1", "from": "news@uyut.example", "dkim": dkim_options}, tmp_path)
    assert error in str(caught.value)
    assert "not a key" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"from": "news@uyut.example"}, "'host' is required"),
        ({"host": "h"}, "'from' must be an e-mail address"),
        ({"host": "h", "from": "news@uyut.example", "security": "ssl"}, "none, starttls or tls"),
        ({"host": "h", "from": "news@uyut.example", "security": "none", "username": "u", "password": "p4ss"}, "in clear"),
        ({"host": "h", "from": "news@uyut.example", "username": "u"}, "both 'username' and 'password'"),
        ({"host": "h", "from": "news@uyut.example", "rate_per_second": "fast"}, "'rate_per_second' must be a number"),
        ({"host": "h", "from": "news@uyut.example", "pasword": "p4ss"}, "'pasword' (did you mean 'password'?)"),
    ],
)
def test_bad_options_are_refused_by_name(options, error):
    with pytest.raises(ConfigError) as caught:
        open_smtp(options)
    assert error in str(caught.value)
    assert "p4ss" not in str(caught.value)


# --- the server's answers ---------------------------------------------------------------


def test_answers_map_to_temporary_and_permanent_failures_on_one_connection():
    with smtp_peer() as peer:
        handler = peer.handler
        handler.rcpt_answers["full@uyut.example"] = deque(["452 4.2.2 Mailbox full"])
        handler.rcpt_answers["gone@uyut.example"] = deque(["550 5.1.1 No such user"])
        handler.rcpt_answers["policy@uyut.example"] = deque(["550 5.7.1 Rejected by policy"])
        handler.data_answers["greylist@uyut.example"] = deque(["451 4.7.1 Greylisted, try again later"])
        handler.data_answers["spam@uyut.example"] = deque(["554 5.7.1 Message looks like spam"])
        addresses = ["full", "gone", "policy", "greylist", "spam", "fine"]
        batch = [message(n, to=f"{name}@uyut.example") for n, name in enumerate(addresses)]
        results, sender = send(peer.options(), batch)
    by_address = dict(zip(addresses, results))
    assert {name: r.status for name, r in by_address.items()} == {
        "full": "temporary_failure", "gone": "permanent_failure", "policy": "permanent_failure",
        "greylist": "temporary_failure", "spam": "permanent_failure", "fine": "sent",
    }
    assert by_address["gone"].address_invalid and not by_address["policy"].address_invalid
    assert "RCPT TO: 550 5.1.1 No such user" == by_address["gone"].error
    assert "DATA: 451" in by_address["greylist"].error
    assert all(r.provider_id is None for r in results[:-1])
    assert [mail.rcpt_tos for mail in peer.received] == [("fine@uyut.example",)]
    assert peer.connections == 1  # refusals do not cost the connection


def test_a_refused_sender_is_temporary_it_is_no_fault_of_the_message():
    with smtp_peer() as peer:
        peer.handler.mail_answers.append("553 5.7.1 Sender address not allowed for this account")
        results, _ = send(peer.options(), [message(1), message(2)])
    assert [r.status for r in results] == ["temporary_failure", "sent"]
    assert results[0].error == "MAIL FROM: 553 5.7.1 Sender address not allowed for this account"


def test_delivery_retries_a_451_until_sent_once_and_never_retries_a_550(tmp_path):
    """campaignctl.delivery does the retrying: exponential backoff with jitter,
    up to max_attempts; the smtp channel only reports what the server said."""
    with smtp_peer() as peer:
        peer.handler.data_answers["later@uyut.example"] = deque(["451 4.3.0 Try again later"])
        peer.handler.rcpt_answers["gone@uyut.example"] = deque(["550 5.1.1 No such user"] * 10)
        store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
        sender = open_smtp(peer.options())
        later, gone = message(1, to="later@uyut.example"), message(2, to="gone@uyut.example")
        sleeps: list[float] = []
        try:
            with locked(store, "test", timeout=0):
                report = deliver(
                    store, {"email": sender}, [DueMessage(later, 0, 0.15), DueMessage(gone, 0, 0.15)],
                    max_attempts=4, backoff=Backoff(initial=1.0), sleep=sleeps.append, rng=random.Random(7),
                )
                again = deliver(store, {"email": sender}, [DueMessage(later, 0, 0.15), DueMessage(gone, 0, 0.15)], sleep=sleeps.append)
            rows = {row.key: row for row in store.messages([later.key, gone.key])}
        finally:
            sender.close()
            store.close()
    assert report.counts["email"] == {SENT: 1, FAILED_PERMANENT: 1}
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0  # one backoff round, with jitter
    assert [mail.rcpt_tos for mail in peer.received] == [("later@uyut.example",)]  # sent exactly once
    assert rows[later.key].status == MessageStatus.SENT and rows[later.key].attempts == 2
    assert rows[later.key].provider_id == peer.received[0].message["Message-ID"]
    assert rows[gone.key].status == MessageStatus.FAILED_PERMANENT and rows[gone.key].attempts == 1
    assert "550 5.1.1" in rows[gone.key].error
    assert again.counts["email"] == {"already_sent": 1, FAILED_PERMANENT: 1}
    assert len(peer.handler.rcpt_answers["gone@uyut.example"]) == 9  # asked once, across both runs


# --- from a project file ----------------------------------------------------------------

PROJECT = """\
version: 1
name: shop
timezone: Europe/Moscow
currency: RUB
data_source: {{plugin: duckdb, options: {{path: data}}}}
channels:
  email:
    plugin: smtp
    kind: email
    cost: 0.15
    options:
      host: 127.0.0.1
      port: {port}
      security: starttls
      username: {user}
      password: ${{env:SMTP_PASSWORD}}
      from: Uyut Home <news@uyut.example>
      ca_file: {ca_file}
{extra}"""


def project(tmp_path: Path, port: int, ca_file: str, extra: str = "") -> Path:
    (tmp_path / "campaignctl.yaml").write_text(PROJECT.format(port=port, user=SMTP_USER, ca_file=ca_file, extra=extra))
    return tmp_path


def test_a_project_channel_sends_with_the_password_from_the_environment(tmp_path, server_context, ca_file):
    from campaignctl.connect import open_senders
    from campaignctl.project import load_project

    with smtp_peer("starttls", server_context, auth=True) as peer:
        loaded = load_project(project(tmp_path, peer.port, ca_file))
        sender = open_senders(loaded, ["email"], {"SMTP_PASSWORD": SMTP_PASSWORD})["email"]
        (result,) = sender.send([message(1)])
        sender.close()
    assert result.status == "sent"
    assert peer.received[0].authenticated_as == SMTP_USER


def test_a_project_channel_with_a_typo_is_located_and_keeps_the_password_secret(tmp_path, ca_file):
    from campaignctl.connect import open_senders
    from campaignctl.diagnostics import ProjectError
    from campaignctl.project import load_project

    loaded = load_project(project(tmp_path, 2525, ca_file, extra="      rate_per_secnd: 5\n"))
    with pytest.raises(ProjectError) as caught:
        open_senders(loaded, ["email"], {"SMTP_PASSWORD": "hunter2-secret"})
    shown = str(caught.value) + repr(caught.value.diagnostics)
    assert str(caught.value).startswith("campaignctl.yaml:7:3: channels.email: smtp: unknown option(s)")
    assert "'rate_per_secnd' (did you mean 'rate_per_second'?)" in shown
    assert "hunter2-secret" not in shown
