"""Built-in channel ``web_push``: browser notifications through the Web Push
protocol (RFC 8030), with VAPID (RFC 8292) and aes128gcm encryption (RFC 8291).

The customer's ``web_push_endpoint`` contact holds the browser's
PushSubscription as JSON: ``{"endpoint": "https://...", "keys": {"p256dh",
"auth"}}``. Each message's ``{"title", "body", "url", "key"}`` is encrypted for
that subscription alone and POSTed to its endpoint with
``Authorization: vapid t=<JWT>, k=<public key>`` (the JWT signed ES256 with
the site's VAPID key, ``aud`` the endpoint's origin, ``sub`` a mailto: or
https: contact), ``Content-Encoding: aes128gcm``, ``TTL`` and ``Urgency``.

Push services answer 201; 404 and 410 mean the subscription is gone:
permanent and ``address_invalid``; 429 and 5xx are temporary; other 4xx
permanent with the service's text.

Libraries: http_ece does the aes128gcm content encoding (the reference
implementation, also what pywebpush calls) and PyJWT signs VAPID. pywebpush
itself is not used: its transports (requests, aiohttp) would be bypassed for
the shared campaignctl.http_sender, leaving only a wrapper around these two.

Options: ``vapid_private_key`` (required: PEM, a path to it, or the raw key in
base64url as web-push tools print it; e.g. ``${env:VAPID_PRIVATE_KEY}``),
``vapid_subject`` (required: ``mailto:...`` or ``https://...``), ``ttl``
(seconds the service keeps a message for an offline browser, default 86400),
``urgency`` (very-low, low, normal, high), ``concurrency``, ``timeout``,
``ca_file``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from campaignctl.contracts import OutgoingMessage, SendResult
from campaignctl.hookspecs import hookimpl
from campaignctl.http_sender import (
    HTTP_OPTIONS,
    PERMANENT,
    HttpAnswer,
    HttpBatchSender,
    HttpRequest,
    classify,
    sender_from_options,
)
from campaignctl.model import Channel
from campaignctl.options import checked_options, project_path, seconds_option

__version__ = "0.1.0"

OPTIONS = ("vapid_private_key", "vapid_subject", "ttl", "urgency", *HTTP_OPTIONS)
URGENCIES = ("very-low", "low", "normal", "high")
VAPID_LIFETIME = 12 * 3600  # seconds a VAPID JWT is valid (services refuse more than 24 h)
VAPID_RENEW = 6 * 3600  # seconds after which a cached JWT is replaced
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # http:// endpoints are allowed only here (tests)


class SubscriptionError(ValueError):
    """The contact is not a usable push subscription; sending again cannot help."""


@dataclass(frozen=True, repr=False)
class PushSubscription:
    endpoint: str
    p256dh: bytes  # the browser's P-256 public key, uncompressed (65 bytes)
    auth: bytes  # the browser's 16-byte authentication secret

    def __repr__(self) -> str:  # the endpoint is a capability: whoever has it can push
        return "PushSubscription(...)"

    @property
    def origin(self) -> str:
        url = urlsplit(self.endpoint)
        return f"{url.scheme}://{url.netloc}"


def parse_subscription(contact: str) -> PushSubscription:
    """The subscription in a ``web_push_endpoint`` contact (PushSubscription.toJSON())."""
    text = contact.strip()
    if not text.startswith("{"):
        raise SubscriptionError("the web_push_endpoint contact has no subscription keys: store the browser's "
                                "PushSubscription JSON (endpoint, keys.p256dh, keys.auth), not just the endpoint URL")
    try:
        data = json.loads(text)
        endpoint, keys = data["endpoint"], data["keys"]
        p256dh, auth = _b64decode(keys["p256dh"]), _b64decode(keys["auth"])
    except (ValueError, KeyError, TypeError):
        raise SubscriptionError("the web_push_endpoint contact is not a PushSubscription JSON with endpoint, keys.p256dh, keys.auth") from None
    url = urlsplit(str(endpoint))
    if not (url.scheme == "https" or (url.scheme == "http" and url.hostname in LOCAL_HOSTS)) or not url.netloc:
        raise SubscriptionError("the subscription's endpoint is not an https:// URL")
    if len(p256dh) != 65 or p256dh[0] != 4 or len(auth) != 16:
        raise SubscriptionError("the subscription's keys are malformed (p256dh: 65-byte P-256 point, auth: 16 bytes)")
    return PushSubscription(str(endpoint), p256dh, auth)


class VapidSigner:
    """VAPID Authorization headers, one JWT per push service origin, reused for hours."""

    def __init__(self, private_key: Any, subject: str, clock: Callable[[], float] = time.time) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key = private_key
        self.subject = subject
        self.clock = clock
        public = private_key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.public_key = _b64encode(public)  # what the site gave browsers as applicationServerKey
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VapidSigner(subject={self.subject!r})"

    def authorization(self, audience: str) -> str:
        import jwt

        with self._lock:
            now = self.clock()
            token, made_at = self._tokens.get(audience, ("", 0.0))
            if not token or now - made_at >= VAPID_RENEW:
                claims = {"aud": audience, "exp": int(now) + VAPID_LIFETIME, "sub": self.subject}
                token = jwt.encode(claims, self._key, algorithm="ES256", headers={"typ": "JWT"})
                self._tokens[audience] = (token, now)
        return f"vapid t={token}, k={self.public_key}"


class WebPushSender:
    def __init__(self, signer: VapidSigner, ttl: int, urgency: str, http: HttpBatchSender) -> None:
        self.signer = signer
        self.ttl = ttl
        self.urgency = urgency
        self.http = http

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "WebPushSender":
        what = f"web_push channel {channel.name!r}"
        options = checked_options(channel.options, OPTIONS, what)
        subject = options.get("vapid_subject")
        if not isinstance(subject, str) or not subject.startswith(("mailto:", "https://")):
            raise ValueError(f"{what}: option 'vapid_subject' must be a contact for the push services: 'mailto:crm@shop.example' or an https:// URL")
        ttl = seconds_option(options, "ttl", 86400, what)
        urgency = options.get("urgency", "normal")
        if urgency not in URGENCIES:
            raise ValueError(f"{what}: option 'urgency' must be one of {', '.join(URGENCIES)}, not {urgency!r}")
        key = load_vapid_key(options.get("vapid_private_key"), project_root, what)
        return cls(VapidSigner(key, subject), ttl, urgency, sender_from_options(options, project_root, what=what))

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return self.http.send([self._request(m) for m in messages], self._interpret) if messages else []

    def _request(self, message: OutgoingMessage) -> HttpRequest | SendResult:
        import http_ece
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            subscription = parse_subscription(message.to)
        except SubscriptionError as exc:
            return SendResult(message.key, PERMANENT, error=str(exc))
        payload = {"title": message.parts.get("title", ""), "body": message.parts.get("body", ""), "url": message.parts.get("url", ""),
                   "key": message.key}
        # A fresh sender key per message (RFC 8291 section 3.4): the payload is readable only with the browser's private key.
        content = http_ece.encrypt(json.dumps(payload, ensure_ascii=False).encode(), private_key=ec.generate_private_key(ec.SECP256R1()),
                                   dh=subscription.p256dh, auth_secret=subscription.auth, version="aes128gcm")
        headers = {
            "authorization": self.signer.authorization(subscription.origin),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(self.ttl),
            "urgency": self.urgency,
        }
        return HttpRequest(message.key, subscription.endpoint, "POST", headers, content)

    def _interpret(self, request: HttpRequest, answer: HttpAnswer) -> SendResult:
        location = answer.headers.get("location") or None
        if 200 <= answer.status < 300:
            return classify(request.key, answer, provider_id=location.rsplit("/", 1)[-1] if location else None)
        if answer.status in (404, 410):  # the browser unsubscribed or the subscription expired
            return SendResult(request.key, PERMANENT, error=f"push subscription gone (HTTP {answer.status})", address_invalid=True)
        return classify(request.key, answer)

    def close(self) -> None:
        self.http.close()


def load_vapid_key(value: Any, project_root: Path, what: str) -> Any:
    """The VAPID private key from a PEM, a path to one, or a raw base64url scalar."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}: option 'vapid_private_key' is required (PEM, a path, or base64url; e.g. ${{env:VAPID_PRIVATE_KEY}})")
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        elif (path := project_path(text, project_root)).is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        else:
            raw = _b64decode(text)
            if len(raw) != 32:
                raise ValueError("not 32 bytes")
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError, OSError):
        raise ValueError(f"{what}: option 'vapid_private_key' is not a P-256 private key (PEM, a path to one, or 32 bytes base64url)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{what}: option 'vapid_private_key' must be a P-256 (prime256v1) key")
    return key


def _b64decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@hookimpl
def register_channels(register):
    register("web_push", WebPushSender.from_config)
