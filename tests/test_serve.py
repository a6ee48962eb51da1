"""`campaignctl serve` on a real uvicorn server: a small project is applied to
the outbox with tracking on, and the links in the sent messages are followed
over HTTP, as a mail provider, a customer and a link scanner would."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from campaignctl.connect import open_state_store
from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import apply, make_plan
from campaignctl.project import load_project
from campaignctl.serve import PIXEL_GIF, SIGNATURE_HEADER, TrackingServer, sign_webhook, uvicorn_server
from campaignctl.tokens import TokenSigner

NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)  # 10:30 in Moscow
FAR_FUTURE = NOW + timedelta(days=36500)  # token expiry that the real clock serve reads will not reach
ENV = {"TEST_LINK_SECRET": "s3cr3t-for-links-only-in-tests", "TEST_WEBHOOK_SECRET": "s3cr3t-for-webhooks"}

PROJECT = """\
version: 1
name: shop
timezone: Europe/Moscow
currency: RUB
data_source: {plugin: duckdb, options: {path: data}}
state_store: {plugin: sqlite, options: {path: state.db}}
channels:
  email: {plugin: outbox, kind: email, cost: 0.1, options: {path: out/email.jsonl}}
policies: {global_holdout: 0, suppress_inactive_days: null}
tracking:
  base_url: BASE_URL/mail
  secret: ${env:TEST_LINK_SECRET}
  unsubscribe_mailto: unsubscribe@shop.example
  token_ttl: 100y  # the messages are sent at NOW (2026); serve checks links against the real clock
  links:
    site: https://shop.example/?utm_source=email
    game: https://shop.example/game
  webhook_secret: ${env:TEST_WEBHOOK_SECRET}
"""

DOCUMENTS = """\
version: 1
segments:
  emailable: {where: {reachable: email}}
templates:
  news:
    channel: email
    subject: News for {{ customer.first_name }}
    html: templates/news.html
cascades:
  twice:
    steps:
      - {channel: email, template: news}
      - {wait: 1d, channel: email, template: news}
campaigns:
  news:
    kind: broadcast
    audience: emailable
    schedule: {at: "2026-12-01T10:00"}
    cascade: twice
"""

HTML = (
    '<p>Hi {{ customer.first_name }}</p><a href="{{ links.site }}">Shop</a> <a href="{{ links.game }}?box=2">Play</a>'
    ' <a href="{{ unsubscribe_url }}">Unsubscribe</a><img src="{{ open_pixel_url }}" width="1" height="1" alt="">'
)


class Served:
    def __init__(self, root: Path, base: str, messages: list[dict]):
        self.root, self.base, self.messages = root, base, messages
        self.project = load_project(root)

    def outcomes(self, key: str) -> list:
        store = open_state_store(self.project, ENV)
        try:
            return store.outcomes(key)
        finally:
            store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The project applied at NOW (one e-mail per customer so far), and
    `campaignctl serve` for it listening on a free port."""
    root = tmp_path_factory.mktemp("tracked")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for name, text in {"campaignctl.yaml": PROJECT.replace("BASE_URL", base), "campaigns.yaml": DOCUMENTS, "templates/news.html": HTML}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    generate_demo_data(root / "data", 200, seed=5, as_of=NOW)
    project = load_project(root)
    result = apply(project, NOW, environ=ENV)
    assert result.applied and not result.render_failures, result.render_failures
    messages = [json.loads(line) for line in (root / "out/email.jsonl").read_text().splitlines()]
    assert len(messages) >= 20

    with running(TrackingServer(project, ENV), listener):
        yield Served(root, base, messages)


@contextlib.contextmanager
def running(app: TrackingServer, listener: socket.socket):
    """``app`` under a real uvicorn server on ``listener``, in a thread."""
    server = uvicorn_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


HTTP = urllib.request.build_opener(NoRedirects)


def call(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, headers, body) of one request, whatever the status."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with HTTP.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def one_click(url: str, body: bytes = b"List-Unsubscribe=One-Click", content_type: str = "application/x-www-form-urlencoded"):
    return call(url, body, {"Content-Type": content_type})


def link(message: dict, text: str) -> str:
    """The href of the anchor with this text in the message's HTML."""
    html = message["parts"]["html"]
    end = html.index(f">{text}</a>")
    return html[html.rindex('href="', 0, end) + 6 : html.index('"', html.rindex('href="', 0, end) + 6)].replace("&amp;", "&")


def unsubscribed_count(plan) -> int:
    return sum(h.count for h in plan.held_back if h.rule == "unsubscribed")


def types(served: Served, key: str) -> list[str]:
    return sorted(o.type for o in served.outcomes(key))


# --------------------------------------------------------------------------- what apply put in the messages


def test_sent_messages_carry_signed_links_and_the_list_unsubscribe_pair(served):
    message = served.messages[0]
    https_url, mailto = message["metadata"]["list_unsubscribe"]
    assert https_url.startswith(served.base + "/mail/u/")
    token = https_url.rsplit("/", 1)[1]
    assert mailto == f"mailto:unsubscribe@shop.example?subject=unsubscribe-{token}"
    assert link(message, "Unsubscribe") == https_url
    assert link(message, "Shop").startswith(served.base + "/mail/c/") and link(message, "Play").endswith("?box=2")
    assert "shop.example" not in message["parts"]["html"]  # targets are inside the signed tokens, not in the mail
    assert "s3cr3t" not in json.dumps(message)


# --------------------------------------------------------------------------- unsubscribe


def test_one_click_unsubscribe_holds_the_customer_back_in_the_next_plan(served):
    """The issue's acceptance: POST List-Unsubscribe=One-Click to the URL from
    the message's metadata; the next plan excludes that customer."""
    message = served.messages[1]
    customer = message["customer_id"]
    later = NOW + timedelta(days=2)
    before = make_plan(served.project, later, environ=ENV)
    assert customer in {str(m.customer_id) for m in before.messages}  # due a second e-mail

    status, _, _ = one_click(message["metadata"]["list_unsubscribe"][0])
    assert status == 200
    assert types(served, message["key"]) == ["unsubscribed"]
    after = make_plan(served.project, later, environ=ENV)
    assert customer not in {str(m.customer_id) for m in after.messages}
    assert unsubscribed_count(after) == unsubscribed_count(before) + 1

    again, _, _ = one_click(message["metadata"]["list_unsubscribe"][0])  # a provider retrying the POST
    assert again == 200 and types(served, message["key"]) == ["unsubscribed"]


def test_a_get_shows_a_confirmation_page_and_never_unsubscribes(served):
    message = served.messages[2]
    url = message["metadata"]["list_unsubscribe"][0]
    for _ in range(3):  # a link scanner, a preview, the customer
        status, headers, body = call(url)
        assert status == 200 and b'<form method="post">' in body
        assert headers["Cache-Control"].startswith("no-store") and headers["Referrer-Policy"] == "no-referrer"
    assert types(served, message["key"]) == []

    status, _, body = call(url, b"List-Unsubscribe=One-Click&source=page", {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and b"You are unsubscribed" in body
    assert [o.payload for o in served.outcomes(message["key"])] == [{"via": "confirmation page"}]


def test_a_multipart_one_click_post_unsubscribes(served):
    """RFC 8058 says senders SHOULD post multipart/form-data."""
    message = served.messages[3]
    boundary = "x7MA4YWxkTrZu0gW"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--{boundary}--\r\n').encode()
    status, _, _ = one_click(message["metadata"]["list_unsubscribe"][0], body, f"multipart/form-data; boundary={boundary}")
    assert status == 200 and types(served, message["key"]) == ["unsubscribed"]


def test_a_post_without_the_one_click_field_changes_nothing(served):
    message = served.messages[4]
    status, _, _ = one_click(message["metadata"]["list_unsubscribe"][0], b"hello=world")
    assert status == 400 and types(served, message["key"]) == []


def test_tampered_expired_and_other_purpose_tokens_change_nothing(served):
    message = served.messages[5]
    url = message["metadata"]["list_unsubscribe"][0]
    prefix, token = url.rsplit("/", 1)
    signer = TokenSigner(ENV["TEST_LINK_SECRET"])
    victim = served.messages[6]["key"]  # someone else's message, forged into a valid-looking token
    body, signature = token.split(".")
    forged_body = signer.sign("unsubscribe", victim, FAR_FUTURE).split(".")[0]
    attempts = {
        "tampered": (f"{prefix}/{forged_body}.{signature}", 400),
        "flipped signature": (f"{prefix}/{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}", 400),
        "wrong secret": (f"{prefix}/{TokenSigner('guess').sign('unsubscribe', message['key'], FAR_FUTURE)}", 400),
        "expired": (f"{prefix}/{signer.sign('unsubscribe', message['key'], datetime.now(timezone.utc) - timedelta(seconds=1))}", 410),
        "open token": (f"{prefix}/{signer.sign('open', message['key'], FAR_FUTURE)}", 400),
        "garbage": (f"{prefix}/not-a-token", 400),
    }
    for name, (forged, expected) in attempts.items():
        assert one_click(forged)[0] == expected, name
        assert call(forged)[0] == expected, name
    assert types(served, message["key"]) == [] and types(served, victim) == []


# --------------------------------------------------------------------------- clicks and opens


def test_a_click_is_recorded_and_redirected_to_the_signed_target_only(served):
    message = served.messages[7]
    status, headers, _ = call(link(message, "Shop"))
    assert status == 302 and headers["Location"] == "https://shop.example/?utm_source=email"
    status, headers, _ = call(link(message, "Play"))  # the template added ?box=2 after the tracked link
    assert status == 302 and headers["Location"] == "https://shop.example/game?box=2"
    assert [o.payload["url"] for o in served.outcomes(message["key"])] == ["https://shop.example/?utm_source=email", "https://shop.example/game"]
    call(link(message, "Shop"))  # clicked again: attribution needs one
    assert types(served, message["key"]) == ["clicked", "clicked"]


def test_a_forged_click_never_redirects_elsewhere(served):
    message = served.messages[8]
    url = link(message, "Shop")
    prefix, token = url.rsplit("/", 1)
    body, signature = token.split(".")
    evil_body = TokenSigner("guess").sign("click", message["key"], FAR_FUTURE, "https://evil.example/").split(".")[0]
    for forged in (f"{prefix}/{evil_body}.{signature}", f"{prefix}/{body}x.{signature}", url + "?next=https://evil.example/"):
        status, headers, _ = call(forged)
        assert "evil.example" not in urlsplit(headers.get("Location") or "").netloc
        assert status in (302, 400)
    unsubscribe_token = message["metadata"]["list_unsubscribe"][0].rsplit("/", 1)[1]
    status, headers, _ = call(f"{prefix}/{unsubscribe_token}")  # an unsubscribe token is not a click token
    assert status == 400 and headers.get("Location") is None
    assert types(served, message["key"]) == ["clicked"]  # only the genuine link (with an extra query) counted


def test_an_expired_click_still_reaches_its_target_but_is_not_recorded(served):
    message = served.messages[9]
    old = TokenSigner(ENV["TEST_LINK_SECRET"]).sign("click", message["key"], datetime.now(timezone.utc) - timedelta(seconds=1), "https://shop.example/old")
    status, headers, _ = call(f"{served.base}/mail/c/{old}")
    assert status == 302 and headers["Location"] == "https://shop.example/old"
    assert types(served, message["key"]) == []


def test_the_open_pixel_records_one_open(served):
    message = served.messages[10]
    html = message["parts"]["html"]
    pixel = html[html.index('<img src="') + 10 :].split('"')[0]
    assert urlsplit(pixel).path.endswith(".gif")
    for _ in range(2):
        status, headers, body = call(pixel)
        assert status == 200 and body == PIXEL_GIF and headers["Content-Type"] == "image/gif"
        assert "no-cache" in headers["Cache-Control"]
    assert types(served, message["key"]) == ["opened"]
    forged = pixel.replace("/o/", "/o/x")
    assert call(forged)[2] == PIXEL_GIF and types(served, message["key"]) == ["opened"]


# --------------------------------------------------------------------------- webhooks


def webhook(served: Served, events, signature: str | None = None, channel: str = "email"):
    body = json.dumps(events).encode()
    secret = ENV["TEST_WEBHOOK_SECRET"].encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature if signature is not None else sign_webhook(secret, body)}
    status, _, answer = call(f"{served.base}/mail/webhooks/{channel}", body, headers)
    return status, answer


def test_a_webhook_with_a_bad_signature_is_rejected_and_a_good_one_recorded(served):
    key = served.messages[11]["key"]
    events = [{"key": key, "type": "delivered", "at": "2026-12-01T07:31:00+00:00", "payload": {"smtp": "250"}},
              {"key": key, "type": "bounced", "at": "2026-12-01T07:32:00+00:00"}]
    assert webhook(served, events, signature="sha256=" + "0" * 64)[0] == 401
    assert webhook(served, events, signature="")[0] == 401
    assert types(served, key) == []

    status, answer = webhook(served, events + [{"key": "no/such/message", "type": "opened", "at": "2026-12-01T08:00:00"}, {"type": "x"}])
    result = json.loads(answer)
    assert status == 200 and result["recorded"] == 2 and result["unknown_keys"] == ["no/such/message"]
    assert [row["event"] for row in result["invalid"]] == [4]
    assert types(served, key) == ["bounced", "delivered"]

    status, answer = webhook(served, {"events": events})  # the provider retries: nothing new
    assert status == 200 and json.loads(answer)["repeated"] == 2 and types(served, key) == ["bounced", "delivered"]
    assert webhook(served, events, channel="carrier_pigeon")[0] == 404


def test_an_unsubscribe_reported_by_webhook_counts_like_a_one_click_one(served):
    message = served.messages[12]
    status, _ = webhook(served, [{"key": message["key"], "type": "unsubscribed", "at": "2026-12-01T09:00:00+00:00"}])
    assert status == 200
    store = open_state_store(served.project, ENV)
    try:
        assert (message["customer_id"], "email") in store.unsubscribed()
    finally:
        store.close()


class SignedEsp:
    """A channel plugin whose provider signs webhooks its own way: header
    X-Esp-Signature, HMAC-SHA256 with the secret in the channel's options."""

    def __init__(self, channel, root):
        self.secret = channel.options["webhook_secret"].encode()

    def send(self, messages):
        raise AssertionError("not sent to here")

    def parse_webhook(self, body: bytes, headers) -> list:
        from campaignctl.state import Outcome

        if not hmac.compare_digest(headers.get("x-esp-signature", ""), hmac.new(self.secret, body, hashlib.sha256).hexdigest()):
            raise PermissionError("bad signature")
        try:
            return [Outcome(e["msg"], {"open": "opened", "click": "clicked"}[e["event"]], datetime.fromtimestamp(e["ts"], timezone.utc))
                    for e in json.loads(body)]
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"unexpected event: {exc}") from None

    def close(self):
        pass


def test_a_channel_plugin_can_parse_its_own_webhooks(served, tmp_path):
    from campaignctl import plugins
    from campaignctl.hookspecs import hookimpl

    class EspPlugin:
        @hookimpl
        def register_channels(self, register):
            register("signed_esp", SignedEsp)

    plugins.register_plugin(EspPlugin(), name="signed-esp-test")
    try:
        # The same state as the served project, and a channel whose plugin parses webhooks.
        text = (PROJECT.replace("BASE_URL", "https://t.shop.example").replace("path: state.db", f"path: {served.root / 'state.db'}")
                .replace("channels:\n", "channels:\n  esp: {plugin: signed_esp, kind: email, cost: 0.1, options: {webhook_secret: \"${env:ESP_SECRET}\"}}\n"))
        (tmp_path / "campaignctl.yaml").write_text(text)
        (tmp_path / "campaigns.yaml").write_text(DOCUMENTS)
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates/news.html").write_text(HTML)
        env = {**ENV, "ESP_SECRET": "esp-side-secret"}
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        key = served.messages[15]["key"]
        body = json.dumps([{"msg": key, "event": "open", "ts": 1796110000}]).encode()
        with running(TrackingServer(load_project(tmp_path), env), listener):
            signed = {"X-Esp-Signature": hmac.new(b"esp-side-secret", body, hashlib.sha256).hexdigest()}
            assert call(f"{base}/webhooks/esp", body, {"X-Esp-Signature": "0" * 64})[0] == 401
            # campaignctl's own signature means nothing to this channel: its plugin decides.
            assert call(f"{base}/webhooks/esp", body, {SIGNATURE_HEADER: sign_webhook(ENV["TEST_WEBHOOK_SECRET"].encode(), body)})[0] == 401
            assert types(served, key) == []
            status, _, answer = call(f"{base}/webhooks/esp", body, signed)
            assert status == 200 and json.loads(answer)["recorded"] == 1
            assert call(f"{base}/webhooks/esp", b"[{}]", {"X-Esp-Signature": hmac.new(b"esp-side-secret", b"[{}]", hashlib.sha256).hexdigest()})[0] == 400
        assert types(served, key) == ["opened"]
    finally:
        plugins.reset()


# --------------------------------------------------------------------------- the server itself


def test_health_and_methods(served):
    url = served.messages[13]["metadata"]["list_unsubscribe"][0]
    assert call(f"{served.base}/healthz")[::2] == (200, b"ok")
    assert call(url, method="DELETE")[0] == 405
    assert call(f"{served.base}/mail/nowhere")[0] == 404
    assert call(f"{served.base}/mail/webhooks/email", b"x" * (1 << 21), {"Content-Type": "application/json"})[0] == 413
    assert types(served, served.messages[13]["key"]) == []


def test_the_serve_command_logs_routes_never_tokens(served):
    """`campaignctl serve` as run in production, in its own process: its log
    shows what was asked and answered, and no token."""
    env = {**os.environ, **ENV, "NO_COLOR": "1"}
    process = subprocess.Popen([sys.executable, "-m", "campaignctl", "-C", str(served.root), "serve", "--port", "0"],
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        port, said = None, []
        for line in process.stderr:
            said.append(line)
            if match := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
                break
        assert port, "serve did not start:\n" + "".join(said)
        message = served.messages[14]
        url = message["metadata"]["list_unsubscribe"][0]
        local = f"http://127.0.0.1:{port}"
        assert call(url.replace(served.base, local))[0] == 200
        assert call(link(message, "Shop").replace(served.base, local))[0] == 302
        assert call(url.replace(served.base, local), method="DELETE")[0] == 405
    finally:
        process.terminate()
        logged = process.communicate(timeout=10)[1]
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert process.returncode in (0, -15) and "Application shutdown complete" in logged, logged
    assert "GET /u/… 200" in logged and "GET /c/… 302" in logged and "DELETE /u/… 405" in logged
    for token in (url.rsplit("/", 1)[1], link(message, "Shop").rsplit("/", 1)[1]):
        assert token not in logged and token.split(".")[1] not in logged
    assert ENV["TEST_LINK_SECRET"] not in logged


# --------------------------------------------------------------------------- configuration


def test_a_bad_tracking_section_is_reported_where_it_is(tmp_path):
    from campaignctl.project import check_project

    (tmp_path / "campaigns.yaml").write_text(DOCUMENTS)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/news.html").write_text('<a href="{{ links.site }}">x</a>\n<a href="{{ links.nope }}">y</a>\n')
    bad = PROJECT.replace("BASE_URL/mail", "ftp://t.shop.example").replace("${env:TEST_LINK_SECRET}", "hunter2")
    (tmp_path / "campaignctl.yaml").write_text(bad)
    shown = sorted(str(d) for d in check_project(tmp_path).diagnostics)
    assert any(line.startswith("campaignctl.yaml:11:13: base_url:") for line in shown), shown
    assert any(line.startswith("campaignctl.yaml:12:11: secret:") and "${env:NAME}" in line for line in shown), shown

    good = PROJECT.replace("BASE_URL", "https://t.shop.example").replace("token_ttl: 100y", "token_ttl: 7d")
    (tmp_path / "campaignctl.yaml").write_text(good)
    shown = [str(d) for d in check_project(tmp_path).diagnostics]
    assert any(line.startswith("campaignctl.yaml:14:14: tracking.token_ttl: 7d is too short") for line in shown), shown
    assert any(line.startswith("templates/news.html:2:1: templates.news: unknown link 'nope'") for line in shown), shown


def test_an_unknown_link_fails_rendering_and_a_missing_secret_falls_back_to_placeholders(served, tmp_path):
    from campaignctl.templates import MessageRenderer, RenderError
    from campaignctl.tracking import Tracker, tracking_warnings

    tracked = Tracker.for_project(served.project, ENV).for_message("news/v/1/0/w", NOW)
    with pytest.raises(ValueError, match=r"unknown link 'nope' \(links: game, site, unsubscribe\)"):
        _ = tracked.links.nope
    # A name looked up dynamically gets past validation, and fails when rendered.
    for name, text in {"campaignctl.yaml": PROJECT.replace("BASE_URL", "https://t.shop.example"), "campaigns.yaml": DOCUMENTS,
                       "templates/news.html": "<a href=\"{{ links['nope'] }}\">x</a>"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(RenderError, match="template 'news'.*unknown link 'nope'"):
        MessageRenderer(load_project(tmp_path)).render("news", {"links": tracked.links, "customer": {"first_name": "Ann"}})

    untracked = Tracker.for_project(served.project, {}).for_message("news/v/1/0/w", NOW)
    assert untracked.links.site == "https://links.invalid/site?m=news/v/1/0/w" and untracked.list_unsubscribe == ()
    [warning] = tracking_warnings(served.project, {})
    assert warning.severity == "warning" and "TEST_LINK_SECRET is not set" in warning.message
    assert tracking_warnings(served.project, ENV) == []


def test_serve_hosts_the_web_layer_snippet_rules_and_events_when_a_channel_publishes_layers(tmp_path):
    """A project with a web_layer channel: `campaignctl serve` answers under
    {base_url}/layers/ with the snippet, and the rest stays serve's own."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    layered = PROJECT.replace("BASE_URL", base).replace(
        "channels:\n", "channels:\n  site: {plugin: web_layer, kind: web_layer, cost: 0, options: {path: out/layers, secret: '${env:TEST_LINK_SECRET}'}}\n")
    for name, text in {"campaignctl.yaml": layered, "campaigns.yaml": DOCUMENTS, "templates/news.html": HTML}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with running(TrackingServer(load_project(tmp_path), ENV), listener):
        status, headers, body = call(f"{base}/mail/layers/snippet.js")
        assert status == 200 and b"sendBeacon" in body and "javascript" in headers.get("content-type", "")
        assert call(f"{base}/mail/healthz")[0] == 200  # serve's own routes are untouched
        assert call(f"{base}/mail/layers/events", data=b"{}", method="POST")[0] in (400, 403)  # unsigned events change nothing


def test_serve_answers_a_providers_webhook_check_with_the_channel_s_secret(tmp_path):
    """GET /webhooks/<channel>: WhatsApp's hub.challenge handshake is answered
    through the channel's plugin (200 with the challenge, 403 with a wrong
    token); a channel without a handshake allows only POST there."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    wa = ("  wa: {plugin: whatsapp, kind: whatsapp, cost: 4.5, options: {phone_number_id: '106540352242922', token: t,\n"
          "       verify_token: '${env:TEST_WA_VERIFY}', templates: {}}}\n")
    for name, text in {"campaignctl.yaml": PROJECT.replace("BASE_URL", base).replace("channels:\n", "channels:\n" + wa),
                       "campaigns.yaml": DOCUMENTS, "templates/news.html": HTML}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with running(TrackingServer(load_project(tmp_path), {**ENV, "TEST_WA_VERIFY": "meta-check-123"}), listener):
        check = f"{base}/mail/webhooks/wa?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token="
        status, _, body = call(check + "meta-check-123")
        assert (status, body) == (200, b"1158201444")
        assert call(check + "guess")[0] == 403
        assert call(f"{base}/mail/webhooks/email?hub.mode=subscribe&hub.challenge=1&hub.verify_token=x")[0] == 405
        assert call(f"{base}/mail/webhooks/nowhere?hub.challenge=1")[0] == 405
