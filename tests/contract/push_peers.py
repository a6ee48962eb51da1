"""Real local far ends for the push channels: an FCM HTTP v1 endpoint with its
OAuth token endpoint, an APNs HTTP/2 server (hypercorn, TLS from trustme) and a
Web Push endpoint. Each checks the wire format with the real cryptography (the
JWT signatures with the public keys, the aes128gcm payload decrypted with the
subscription's private key), records what it accepted, and can be told to
misbehave for a while (``faults``): answer 429 / 5xx, or hang past the client's
time-out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .http_server import read_request, start_server, stop_server, write_answer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    http_version: str = "HTTP/1.1"


@dataclass(frozen=True)
class Hang:
    """Answer nothing for ``seconds`` (longer than the client waits), then drop the request."""

    seconds: float


Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (or bytes)


@dataclass
class Peer:
    """What every push peer shares: what it got, what it accepted, its faults."""

    requests: list[Received] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # message keys answered 2xx, in order
    faults: deque[Answer | Hang] = field(default_factory=deque)  # for message requests, before the normal answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fault(self) -> Answer | Hang | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def record(self, request: Received) -> None:
        with self.lock:
            self.requests.append(request)

    def accept(self, key: str) -> None:
        with self.lock:
            self.accepted.append(key)


class _Server:
    """A threaded HTTP/1.1 server on 127.0.0.1 that hands each request to ``answer``."""

    def __init__(self, answer) -> None:
        self.server = start_server(_handler(answer))

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        stop_server(self.server)


def _handler(answer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as providers do
        disable_nagle_algorithm = True

        def do_POST(self):
            request = Received(self.command, self.path, *read_request(self))
            result = answer(request)
            if isinstance(result, Hang):
                time.sleep(result.seconds)
                self.close_connection = True
                return
            write_answer(self, *result)

        def log_message(self, format, *args):  # quiet test output
            pass

    return Handler


def _unpadded_b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- FCM --------------------------------------------------------------------------


@dataclass
class FcmPeer(Peer):
    """FCM HTTP v1 and Google's OAuth token endpoint in one server.

    The token endpoint verifies the RS256 assertion with the service account's
    public key, its claims and the grant type, and issues an access token; the
    send endpoint requires that token and FCM's body, answers FCM's message
    name, and 404 UNREGISTERED for tokens starting with ``gone-`` or in ``gone``."""

    project_id: str = "uyut-app"
    client_email: str = "campaigns@uyut-app.iam.gserviceaccount.com"
    token_lifetime: int = 3600
    issued: list[str] = field(default_factory=list)  # access tokens handed out
    gone: set[str] = field(default_factory=set)  # registration tokens of apps uninstalled
    revoked: set[str] = field(default_factory=set)
    key: rsa.RSAPrivateKey | None = None
    server: _Server | None = None

    def start(self) -> "FcmPeer":
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.server = _Server(self.answer)
        return self

    @property
    def token_uri(self) -> str:
        return f"{self.server.base_url}/token"

    def service_account(self) -> dict[str, Any]:
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return {
            "type": "service_account", "project_id": self.project_id, "private_key_id": "k1",
            "private_key": pem.decode(), "client_email": self.client_email, "token_uri": self.token_uri,
        }

    def options(self, tmp_path: Path, **extra: Any) -> dict[str, Any]:
        path = tmp_path / "fcm-service-account.json"
        path.write_text(json.dumps(self.service_account()))
        return {"service_account": str(path), "base_url": self.server.base_url, "timeout": 5, **extra}

    def answer(self, request: Received) -> Answer | Hang:
        self.record(request)
        if request.path == "/token":
            return self._token(request)
        if request.path == f"/v1/projects/{self.project_id}/messages:send":
            return self.fault() or self._send(request)
        return 404, {}, {"error": {"code": 404, "message": "no such endpoint", "status": "NOT_FOUND"}}

    def _token(self, request: Received) -> Answer:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {}, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(form.get("assertion", ""), self.key.public_key(), algorithms=["RS256"], audience=self.token_uri,
                                options={"require": ["iss", "aud", "iat", "exp", "scope"]})
        except jwt.PyJWTError as exc:
            return 400, {}, {"error": "invalid_grant", "error_description": str(exc)}
        if claims["iss"] != self.client_email or claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging":
            return 400, {}, {"error": "invalid_scope"}
        token = f"ya29.{uuid.uuid4().hex}"
        with self.lock:
            self.issued.append(token)
        return 200, {}, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def _send(self, request: Received) -> Answer:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.issued or bearer in self.revoked:
            return 401, {}, {"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}
        try:
            message = json.loads(request.body)["message"]
            token, notification, data = message["token"], message["notification"], message["data"]
            assert isinstance(notification["title"], str) and isinstance(notification["body"], str)
            assert all(isinstance(value, str) for value in data.values()) and data["message_key"]
        except (ValueError, KeyError, TypeError, AssertionError):
            return 400, {}, {"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}
        if token.startswith("gone-") or token in self.gone:
            return 404, {}, {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                                       "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}
        self.accept(data["message_key"])
        return 200, {}, {"name": f"projects/{self.project_id}/messages/{len(self.accepted)}"}

    def messages(self) -> list[dict[str, Any]]:
        """The FCM messages accepted, as sent."""
        sends = [r for r in self.requests if r.path.endswith("messages:send")]
        accepted = set(self.accepted)
        return [m for m in (json.loads(r.body)["message"] for r in sends if r.body.startswith(b"{")) if m.get("data", {}).get("message_key") in accepted]

    def stop(self) -> None:
        if self.server:
            self.server.stop()


@contextmanager
def fcm_peer() -> Iterator[FcmPeer]:
    peer = FcmPeer().start()
    try:
        yield peer
    finally:
        peer.stop()


# --- APNs -------------------------------------------------------------------------


@dataclass
class ApnsPeer(Peer):
    """An APNs provider API on HTTP/2 with TLS (hypercorn, a trustme CA). It
    verifies the ES256 provider token with the key's public half (kid, iss,
    iat), the headers and the payload; answers apns-id; 410 Unregistered for
    device tokens starting with ``gone``, 400 BadDeviceToken for ``bad...``."""

    team_id: str = "TEAM123456"
    key_id: str = "KEY7654321"
    topic: str = "example.uyut.app"
    key: ec.EllipticCurvePrivateKey | None = None
    ca_file: Path | None = None
    port: int = 0
    provider_tokens: set[str] = field(default_factory=set)  # distinct provider JWTs seen
    _loop: asyncio.AbstractEventLoop | None = None
    _shutdown: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def start(self, tmp_path: Path) -> "ApnsPeer":
        import trustme
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        self.key = ec.generate_private_key(ec.SECP256R1())
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = tmp_path / "apns-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert_file = tmp_path / "apns-cert.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
        from .channel_peers import free_port

        self.port = free_port()
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = config.keyfile = str(cert_file)
        config.alpn_protocols = ["h2", "http/1.1"]
        config.accesslog = config.errorlog = None
        # APNs keeps provider connections open for long; hypercorn's 5 s idle
        # close raced with a batch sent just then on a loaded machine.
        config.keep_alive_timeout = 300
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self._loop)
            self._shutdown = asyncio.Event()
            ready.set()
            self._loop.run_until_complete(serve(self.app, config, shutdown_trigger=self._shutdown.wait))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        _wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._loop and self._shutdown:
            self._loop.call_soon_threadsafe(self._shutdown.set)
            self._thread.join(5)

    def key_file(self, tmp_path: Path) -> Path:
        path = tmp_path / f"AuthKey_{self.key_id}.p8"
        path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return path

    def options(self, tmp_path: Path, **extra: Any) -> dict[str, Any]:
        return {"key": str(self.key_file(tmp_path)), "key_id": self.key_id, "team_id": self.team_id, "topic": self.topic,
                "base_url": f"https://127.0.0.1:{self.port}", "ca_file": str(self.ca_file), "timeout": 5, **extra}

    async def app(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Received(scope["method"], scope["path"], headers, body, f"HTTP/{scope['http_version']}")
        self.record(request)
        result = self.fault() or self.answer(request)
        if isinstance(result, Hang):
            await asyncio.sleep(result.seconds)
            result = (503, {}, {"reason": "ServiceUnavailable"})  # the client gave up long ago; never counted
        status, extra, payload = result
        data = payload if isinstance(payload, bytes) else (json.dumps(payload).encode() if payload is not None else b"")
        out = [(b"apns-id", headers.get("apns-id", "").encode())] + [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})

    def answer(self, request: Received) -> Answer:
        if request.method != "POST" or not request.path.startswith("/3/device/"):
            return 404, {}, {"reason": "BadPath"}
        bearer = request.headers.get("authorization", "").removeprefix("bearer ")
        try:
            header = jwt.get_unverified_header(bearer)
            claims = jwt.decode(bearer, self.key.public_key(), algorithms=["ES256"], options={"require": ["iss", "iat"]})
        except jwt.PyJWTError:
            return 403, {}, {"reason": "InvalidProviderToken"}
        if header.get("kid") != self.key_id or claims["iss"] != self.team_id:
            return 403, {}, {"reason": "InvalidProviderToken"}
        if claims["iat"] < time.time() - 3600:
            return 403, {}, {"reason": "ExpiredProviderToken"}
        with self.lock:
            self.provider_tokens.add(bearer)
        h = request.headers
        if h.get("apns-topic") != self.topic:
            return 400, {}, {"reason": "TopicDisallowed"}
        if h.get("apns-push-type") != "alert" or h.get("apns-priority") not in ("5", "10") or not h.get("apns-expiration", "").isdigit():
            return 400, {}, {"reason": "BadHeaders"}
        try:
            uuid.UUID(h.get("apns-id", ""))
            alert = json.loads(request.body)["aps"]["alert"]
            assert isinstance(alert["title"], str) and isinstance(alert["body"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return 400, {}, {"reason": "PayloadEmpty"}
        token = request.path.removeprefix("/3/device/")
        if token.startswith("gone"):
            return 410, {}, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        if token.startswith("bad"):
            return 400, {}, {"reason": "BadDeviceToken"}
        self.accept(json.loads(request.body)["campaignctl_key"])
        return 200, {}, None


def _wait_for_port(port: int, timeout: float = 5.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"the test server on port {port} did not start")


@contextmanager
def apns_peer(tmp_path: Path) -> Iterator[ApnsPeer]:
    peer = ApnsPeer().start(tmp_path)
    try:
        yield peer
    finally:
        peer.stop()


def device_token(n: int) -> str:
    return f"{n:064x}"


# --- Web Push ---------------------------------------------------------------------


@dataclass
class Subscription:
    """A browser's push subscription: what the site stores (endpoint, p256dh,
    auth) and what only the browser holds (the private key)."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def as_json(self) -> str:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return json.dumps({"endpoint": self.endpoint, "keys": {"p256dh": b64(public), "auth": b64(self.auth)}})


@dataclass
class WebPushPeer(Peer):
    """A push service: verifies the VAPID JWT (ES256, aud = its origin, a
    mailto: sub, k = the application server's key) and decrypts each payload
    (aes128gcm, RFC 8188/8291) with the subscription's private key; 410 for
    subscriptions it was told are gone."""

    vapid_public: str = ""  # the application server key, as the site published it
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # by path
    gone: set[str] = field(default_factory=set)  # paths answered 410
    payloads: list[dict[str, Any]] = field(default_factory=list)  # decrypted, accepted
    server: _Server | None = None

    def start(self) -> "WebPushPeer":
        self.server = _Server(self.answer)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()

    def subscribe(self, name: str) -> Subscription:
        path = f"/wp/{name}"
        subscription = Subscription(f"{self.server.base_url}{path}", ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
        self.subscriptions[path] = subscription
        return subscription

    def answer(self, request: Received) -> Answer | Hang:
        self.record(request)
        subscription = self.subscriptions.get(request.path)
        if subscription is None:
            return 404, {}, {"error": "no such subscription"}
        if request.path in self.gone:
            return 410, {}, {"errno": 106, "message": "subscription expired"}
        fault = self.fault()
        if fault is not None:
            return fault
        problem = self._check_vapid(request)
        if problem:
            return 401, {}, {"message": problem}
        if request.headers.get("content-encoding") != "aes128gcm" or not request.headers.get("ttl", "").isdigit():
            return 400, {}, {"message": "Content-Encoding aes128gcm and TTL required"}
        import http_ece

        try:
            plain = http_ece.decrypt(request.body, private_key=subscription.private_key, auth_secret=subscription.auth, version="aes128gcm")
            payload = json.loads(plain)
        except Exception as exc:  # noqa: BLE001 - any decryption failure is the client's fault here
            return 400, {}, {"message": f"cannot decrypt: {type(exc).__name__}"}
        with self.lock:
            self.payloads.append(payload)
        self.accept(payload["key"])
        return 201, {"Location": f"{self.server.base_url}/m/{len(self.accepted)}"}, b""

    def _check_vapid(self, request: Received) -> str | None:
        scheme, _, params = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "vapid":
            return "VAPID authorization required"
        fields = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        if fields.get("k") != self.vapid_public:
            return "unknown application server key"
        point = _unpadded_b64decode(fields["k"])
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.server.base_url))
        try:
            claims = jwt.decode(fields.get("t", ""), public, algorithms=["ES256"], audience=origin, options={"require": ["aud", "exp", "sub"]})
        except jwt.PyJWTError as exc:
            return f"bad VAPID token: {exc}"
        if not claims["sub"].startswith("mailto:") or claims["exp"] > time.time() + 24 * 3600:
            return "VAPID sub must be mailto: and exp within 24 hours"
        return None


def vapid_key_pem(tmp_path: Path) -> tuple[str, str]:
    """A VAPID key file and its public key as a site publishes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "vapid.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return str(path), b64(public)


def web_push_options(tmp_path: Path, peer) -> dict:
    path, public = vapid_key_pem(tmp_path)
    peer.vapid_public = public
    return {"vapid_private_key": path, "vapid_subject": "mailto:crm@uyut.example", "timeout": 5}


@contextmanager
def web_push_peer() -> Iterator[WebPushPeer]:
    peer = WebPushPeer().start()
    try:
        yield peer
    finally:
        peer.stop()
