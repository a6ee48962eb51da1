"""The real far ends the channel senders talk to in tests: an outbox file, an
aiosmtpd SMTP server and an HTTP server on localhost here; the SMS gateway and
SMSC (sms_peers.py), the push services (push_peers.py) and the messenger APIs
(messenger_peers.py) beside it. Each records what it really received, so a
test can check the wire, not the sender's word.

A channel added to campaignctl gets a peer and an entry in ``PEERS``;
tests/contract/test_channels.py then runs it through the shared contract.
"""

from __future__ import annotations

import email.policy
import json
import re
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from .http_server import read_request, start_server, stop_server, write_answer

SMTP_USER = "campaigns@uyut.example"
SMTP_PASSWORD = "correct horse battery staple"
HTTP_TOKEN = "tok_live_5f2b9c1e"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- SMTP ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly as received, for DKIM verification
    message: EmailMessage  # parsed with email.policy.default
    authenticated_as: str | None
    tls: bool

    @property
    def key(self) -> str:
        return str(self.message["X-Campaignctl-Key"])


@dataclass
class RecordingHandler:
    """Accepts mail and records it; answers can be scripted per recipient:
    ``rcpt_answers[address]`` / ``data_answers[address]`` are queues of SMTP
    replies (e.g. "451 4.3.0 try later") given before the address is accepted."""

    received: list[ReceivedMail] = field(default_factory=list)
    rcpt_answers: dict[str, deque[str]] = field(default_factory=dict)
    data_answers: dict[str, deque[str]] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each accepted message
    mail_answers: deque[str] = field(default_factory=deque)  # replies to MAIL FROM, before accepting

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_answers:
            return self.mail_answers.popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if queue := self.rcpt_answers.get(address):
            return queue.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            if queue := self.data_answers.get(address):
                return queue.popleft()
        data = envelope.original_content or envelope.content
        self.arrivals.append(time.monotonic())
        parsed = BytesParser(policy=email.policy.default).parsebytes(data)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit TLS
        self.received.append(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), data, parsed, login, tls))
        return "250 2.0.0 queued"


class CountingSMTP(SMTP):
    """aiosmtpd's server, counting connections and able to drop them."""

    def __init__(self, *args, peer: "SmtpPeer", **kwargs):
        with warnings.catch_warnings():  # aiosmtpd warns of AUTH without STARTTLS, not knowing implicit TLS is on
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(*args, **kwargs)
        self._peer = peer

    def connection_made(self, transport):
        with self._peer.lock:
            self._peer.connections += 1
            self._peer.transports.append(transport)
        super().connection_made(transport)


class _Controller(Controller):
    def __init__(self, handler, peer: "SmtpPeer", **kwargs):
        self._peer = peer
        super().__init__(handler, **kwargs)

    def factory(self):
        return CountingSMTP(self.handler, peer=self._peer, **self.SMTP_kwargs)


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER and auth_data.password.decode() == SMTP_PASSWORD
    # handled=False: aiosmtpd then answers 535 itself on a failure
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass
class SmtpPeer:
    """A real aiosmtpd server on 127.0.0.1. ``security``: none, starttls or tls
    (then ``server_context`` is required); ``auth``: require a login."""

    handler: RecordingHandler = field(default_factory=RecordingHandler)
    connections: int = 0
    transports: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    controller: Controller | None = None

    def start(self, security: str = "none", server_context=None, auth: bool = False) -> "SmtpPeer":
        self.port = free_port()
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port}
        if security == "tls":
            kwargs["ssl_context"] = server_context
        elif security == "starttls":
            kwargs.update(tls_context=server_context, require_starttls=True)
        if auth:
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; an implicit-TLS connection is TLS from the start
            kwargs.update(authenticator=authenticate, auth_required=True, auth_require_tls=security == "starttls")
        self.controller = _Controller(self.handler, self, **kwargs)
        self.controller.start()
        with self.lock:  # the controller's own readiness probe is no client
            self.connections = 0
            self.transports.clear()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    def drop_connections(self) -> None:
        """Close every open connection from the server side, as an idle timeout would."""
        loop = self.controller.loop
        with self.lock:
            transports = list(self.transports)
        done = threading.Event()

        def close_all():
            for transport in transports:
                transport.close()
            done.set()

        loop.call_soon_threadsafe(close_all)
        done.wait(5)

    @property
    def received(self) -> list[ReceivedMail]:
        return self.handler.received

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "security": "none", "from": "Uyut Home <news@uyut.example>", "timeout": 5, **extra}


@contextmanager
def smtp_peer(security: str = "none", server_context=None, auth: bool = False) -> Iterator[SmtpPeer]:
    peer = SmtpPeer().start(security, server_context, auth)
    try:
        yield peer
    finally:
        peer.stop()


# --- HTTP ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpPeer:
    """A real HTTP server on 127.0.0.1 standing in for an e-mail provider's API.
    It records each request; ``answers`` is a queue of (status, headers, body)
    given before the default: 200 with one id per message, refusing addresses
    ending in ``@invalid.example`` with a per-message error."""

    requests: list[ReceivedRequest] = field(default_factory=list)
    answers: deque[tuple[int, dict[str, str], Any]] = field(default_factory=deque)
    connections: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/messages"

    def start(self) -> "HttpPeer":
        self.server = start_server(_handler_for(self))
        return self

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)

    def answer(self, request: ReceivedRequest) -> tuple[int, dict[str, str], Any]:
        if self.answers:
            return self.answers.popleft()
        if request.method != "POST" or request.path != "/v1/messages":
            return 404, {}, {"error": "no such endpoint"}
        if request.headers.get("authorization") != f"Bearer {HTTP_TOKEN}":
            return 401, {}, {"error": "bad token"}
        messages = request.json()["messages"]
        results = [
            {"error": "mailbox does not exist", "temporary": False} if m["to"].endswith("@invalid.example") else {"id": f"esp-{len(self.requests)}-{i}"}
            for i, m in enumerate(messages)
        ]
        return 200, {}, {"results": results}

    def received_messages(self) -> list[dict[str, Any]]:
        """Every message of every POST with a 2xx answer and no per-message error."""
        return [m for r in self.requests if r.method == "POST" for m in r.json()["messages"] if not m["to"].endswith("@invalid.example")]

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "api_key": HTTP_TOKEN, "from": "Uyut Home <news@uyut.example>", "timeout": 5, **extra}


def _handler_for(peer: HttpPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as providers do

        def setup(self):
            super().setup()
            peer.connections += 1

        def do_POST(self):
            self._serve()

        def do_GET(self):
            self._serve()

        def _serve(self):
            request = ReceivedRequest(self.command, self.path, *read_request(self))
            status, headers, body = peer.answer(request)
            peer.requests.append(request)
            write_answer(self, status, headers, body)

        def log_message(self, format, *args):  # quiet test output
            pass

    return Handler


@contextmanager
def http_peer() -> Iterator[HttpPeer]:
    peer = HttpPeer().start()
    try:
        yield peer
    finally:
        peer.stop()


# --- the contract's view of each channel ------------------------------------------


@dataclass
class ChannelUnderTest:
    """What the contract needs from a channel's peer: the options under which the
    plugin talks to it, the channel kind (which decides the message's parts,
    tests/contract/test_channels.py), each customer's address, an address it
    must refuse (None for a kind without addresses: the web layer is addressed
    by customer id), and what the peer really received, by message key."""

    plugin: str
    options: dict[str, Any]
    bad_address: str | None
    received_keys: Callable[[], list[str]]
    kind: str = "email"
    address: Callable[[int], str] = lambda n: f"customer{n}@uyut.example"


# Where a protocol has no field for the message key, the key travels as the
# tracked link's m= parameter (as campaignctl's links carry it); the peer reads it back.
LINK_KEY = re.compile(r"[?&]m=([^\s&]+)")


def link_keys(texts: Iterable[str]) -> list[str]:
    return [found.group(1) for text in texts if (found := LINK_KEY.search(text))]


def phone(n: int) -> str:
    return f"+7 900 000-{n:04d}"


@contextmanager
def outbox_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    sink = tmp_path / "out" / "email.jsonl"

    def keys() -> list[str]:
        return [json.loads(line)["key"] for line in sink.read_text().splitlines()] if sink.exists() else []

    yield ChannelUnderTest("outbox", {"path": "out/email.jsonl"}, "", keys)


@contextmanager
def smtp_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    with smtp_peer() as peer:
        yield ChannelUnderTest("smtp", peer.options(), "not an address", lambda: [mail.key for mail in peer.received])


@contextmanager
def email_http_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    with http_peer() as peer:
        yield ChannelUnderTest("email_http", peer.options(), "not an address", lambda: [m["idempotency_key"] for m in peer.received_messages()])


@contextmanager
def sms_http_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    from .sms_peers import GATEWAY_TOKEN, Gateway

    gateway = Gateway().start()
    options = {
        "url": gateway.url + "/api/sms", "headers": {"Authorization": f"Bearer {GATEWAY_TOKEN}"},
        "body": {"messages": [{"phone": "{to}", "text": "{text}", "from": "{sender}", "client_ref": "{key}", "parts": "{parts}"}]},
        "sender": "Uyut", "id_path": "result.sms_id", "timeout": 5,
    }
    try:
        yield ChannelUnderTest("sms_http", options, "not a phone", gateway.keys, kind="sms", address=phone)
    finally:
        gateway.stop()


@contextmanager
def smpp_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    from .sms_peers import Smsc

    smsc = Smsc().start()
    options = {"host": "127.0.0.1", "port": smsc.port, "system_id": "uyut", "password": "s3cret", "source_addr": "Uyut", "timeout": 5}
    try:
        # The SMSC reassembles concatenated parts as a phone does; the key is in the text's link.
        yield ChannelUnderTest("smpp", options, "not a phone", lambda: link_keys(t for texts in smsc.texts().values() for t in texts),
                               kind="sms", address=phone)
    finally:
        smsc.stop()


@contextmanager
def fcm_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    from .push_peers import fcm_peer

    with fcm_peer() as peer:  # a gone- token is answered 404 UNREGISTERED
        yield ChannelUnderTest("fcm", peer.options(tmp_path), "gone-token", lambda: list(peer.accepted), kind="push",
                               address=lambda n: f"tok-{n}")


@contextmanager
def apns_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    from .push_peers import apns_peer, device_token

    with apns_peer(tmp_path) as peer:  # a bad... device token is answered 400 BadDeviceToken
        yield ChannelUnderTest("apns", peer.options(tmp_path), "bad-device-token", lambda: list(peer.accepted), kind="push",
                               address=device_token)


@contextmanager
def web_push_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    from .push_peers import web_push_options, web_push_peer

    with web_push_peer() as peer:
        gone = peer.subscribe("gone")
        peer.gone.add("/wp/gone")  # the browser unsubscribed: 410
        subscriptions: dict[int, str] = {}

        def address(n: int) -> str:
            if n not in subscriptions:
                subscriptions[n] = peer.subscribe(f"browser{n}").as_json()
            return subscriptions[n]

        yield ChannelUnderTest("web_push", web_push_options(tmp_path, peer), gone.as_json(), lambda: list(peer.accepted),
                               kind="web_push", address=address)


@contextmanager
def telegram_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    from .messenger_peers import BOT_TOKEN, Peer

    keys: list[str] = []

    def bot_api(path: str, headers: dict, body: Any) -> tuple[int, Any, float]:
        """sendMessage as the Bot API answers it: the bot's token in the path, a chat id, HTML text."""
        if path != f"/bot{BOT_TOKEN}/sendMessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}, 0
        if not isinstance(body.get("chat_id"), int) or not body.get("text") or body.get("parse_mode") != "HTML":
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}, 0
        keys.extend(link_keys(button["url"] for row in body.get("reply_markup", {}).get("inline_keyboard", []) for button in row))
        return 200, {"ok": True, "result": {"message_id": len(keys), "chat": {"id": body["chat_id"]}, "text": body["text"]}}, 0

    chats = tmp_path / "telegram_chats.csv"  # who started the bot: customers 0-99, not the one with the bad address
    chats.write_text("customer_id,chat_id\n" + "".join(f"{n},{5000 + n}\n" for n in range(100)))
    server = Peer(bot_api)
    try:
        # A bot cannot write to a phone number: the customer without a chat id is refused.
        yield ChannelUnderTest("telegram", {"token": BOT_TOKEN, "base_url": server.url, "chat_ids": str(chats), "timeout": 5},
                               phone(9999), lambda: list(keys), kind="telegram", address=phone)
    finally:
        server.stop()


@contextmanager
def whatsapp_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    from .messenger_peers import TEMPLATES, WA_TOKEN, Peer

    keys: list[str] = []

    def cloud_api(path: str, headers: dict, body: Any) -> tuple[int, Any, float]:
        """POST /{version}/{phone_number_id}/messages as the Cloud API answers it."""
        if path != "/v21.0/106540352242922/messages" or headers.get("authorization") != f"Bearer {WA_TOKEN}":
            return 401, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}, 0
        if body.get("type") != "template" or body["template"].get("name") != "uyut_game" or not body.get("biz_opaque_callback_data"):
            return 400, {"error": {"message": "(#132000) Number of parameters does not match", "code": 132000}}, 0
        keys.append(body["biz_opaque_callback_data"])
        return 200, {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                     "messages": [{"id": f"wamid.{len(keys)}"}]}, 0

    server = Peer(cloud_api)
    options = {"phone_number_id": "106540352242922", "token": WA_TOKEN, "base_url": server.url, "version": "v21.0",
               "templates": TEMPLATES, "timeout": 5}
    try:
        yield ChannelUnderTest("whatsapp", options, "12", lambda: list(keys), kind="whatsapp", address=phone)
    finally:
        server.stop()


@contextmanager
def web_layer_channel(tmp_path: Path) -> Iterator[ChannelUnderTest]:
    visitors = tmp_path / "out" / "web_layer" / "visitors"

    def keys() -> list[str]:
        """Every layer published for any visitor, read from the rules the site's snippet fetches."""
        return [layer["key"] for path in sorted(visitors.glob("*.json")) for layer in json.loads(path.read_text())["layers"]]

    yield ChannelUnderTest("web_layer", {"path": "out/web_layer", "secret": "contract-web-layer-secret"}, None, keys,
                           kind="web_layer", address=str)


PEERS: dict[str, Callable[[Path], Any]] = {
    "outbox": outbox_channel,
    "smtp": smtp_channel,
    "email_http": email_http_channel,
    "sms_http": sms_http_channel,
    "smpp": smpp_channel,
    "fcm": fcm_channel,
    "apns": apns_channel,
    "web_push": web_push_channel,
    "telegram": telegram_channel,
    "whatsapp": whatsapp_channel,
    "web_layer": web_layer_channel,
}
