"""Built-in channel ``apns``: iOS push through the Apple Push Notification
service's provider API, over HTTP/2 (APNs accepts nothing else).

Each message is one ``POST {base_url}/3/device/{token}`` with the payload
``{"aps": {"alert": {"title", "body"}}, "campaignctl_key", "url"}`` and the
headers apns-topic, apns-push-type ``alert``, apns-priority, apns-expiration
and apns-id, a UUID derived from the idempotency key so a retried message
carries the same id (and APNs' answers can be matched to the ledger). A
message's ``metadata["collapse_id"]`` becomes apns-collapse-id.

Authentication is a provider token: a JWT signed ES256 with the team's .p8
key (kid = key id, iss = team id, iat), reused for 50 minutes: APNs refuses
tokens older than an hour and throttles ones renewed more often than every 20
minutes (TooManyProviderTokenUpdates).

APNs' answers: 200 sent (provider id: apns-id); 410 Unregistered: the token is
gone: permanent and ``address_invalid``; 403 ExpiredProviderToken: a new token
is made and the message retried; 429 and 5xx: temporary; other 4xx: permanent
with APNs' reason.

Options: ``key`` (required: the .p8 file path or its PEM, e.g.
``${env:APNS_KEY}``), ``key_id``, ``team_id``, ``topic`` (the app's bundle id;
all required), ``base_url`` (default https://api.push.apple.com; the sandbox
is https://api.sandbox.push.apple.com), ``priority`` (10 or 5), ``ttl``
(seconds APNs keeps trying to deliver; 0: once), ``concurrency``,
``timeout``, ``ca_file``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

from campaignctl.contracts import OutgoingMessage, SendResult
from campaignctl.hookspecs import hookimpl
from campaignctl.http_sender import (
    HTTP_OPTIONS,
    PERMANENT,
    TEMPORARY,
    HttpAnswer,
    HttpBatchSender,
    HttpRequest,
    classify,
    sender_from_options,
)
from campaignctl.model import Channel
from campaignctl.options import checked_options, project_path, seconds_option

__version__ = "0.1.0"

DEFAULT_BASE_URL = "https://api.push.apple.com"
OPTIONS = ("key", "key_id", "team_id", "topic", "base_url", "priority", "ttl", *HTTP_OPTIONS)
TOKEN_LIFETIME = 50 * 60  # seconds a provider token is reused
DEFAULT_TTL = 24 * 3600
# apns-id is a UUID; deriving it (uuid5) from the idempotency key gives a retry the same id.
APNS_ID_NAMESPACE = uuid.UUID("3b9e1f5c-6a2d-4c1e-9f7a-5d0c2b8e4a61")  # fixed forever: changing it changes every apns-id


class ProviderToken:
    """The ES256 provider token, made again after TOKEN_LIFETIME or when APNs refuses it."""

    def __init__(self, key_pem: str, key_id: str, team_id: str, clock: Callable[[], float] = time.time) -> None:
        self._key_pem = key_pem
        self.key_id = key_id
        self.team_id = team_id
        self.clock = clock
        self._token: str | None = None
        self._made_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # the key stays out of reprs and tracebacks
        return f"ProviderToken(key_id={self.key_id!r}, team_id={self.team_id!r})"

    def current(self) -> str:
        import jwt

        with self._lock:
            now = self.clock()
            if self._token is None or now - self._made_at >= TOKEN_LIFETIME:
                self._token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self._key_pem, algorithm="ES256", headers={"kid": self.key_id})
                self._made_at = now
            return self._token

    def expire(self, token: str) -> None:
        """APNs refused ``token``: make a new one next time (unless already replaced)."""
        with self._lock:
            if self._token == token:
                self._token = None


class ApnsSender:
    def __init__(self, base_url: str, topic: str, priority: int, ttl: int, token: ProviderToken, http: HttpBatchSender,
                 clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url
        self.topic = topic
        self.priority = priority
        self.ttl = ttl
        self.token = token
        self.http = http
        self.clock = clock

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "ApnsSender":
        what = f"apns channel {channel.name!r}"
        options = checked_options(channel.options, OPTIONS, what)
        missing = [name for name in ("key", "key_id", "team_id", "topic") if not options.get(name)]
        if missing:
            raise ValueError(f"{what}: required option(s) {', '.join(missing)} missing; see docs/plugins.md#apns")
        priority = options.get("priority", 10)
        if priority not in (5, 10):
            raise ValueError(f"{what}: option 'priority' must be 10 (now) or 5 (when the device saves power), not {priority!r}")
        ttl = seconds_option(options, "ttl", DEFAULT_TTL, what)
        key_pem = _read_key(options["key"], project_root, what)
        token = ProviderToken(key_pem, str(options["key_id"]), str(options["team_id"]))
        http = sender_from_options(options, project_root, what=what, http2=True)
        base_url = str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        return cls(base_url, str(options["topic"]), priority, ttl, token, http)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        try:
            bearer = self.token.current()
        except (ValueError, TypeError) as exc:  # the key cannot sign; nothing was sent
            return [SendResult(m.key, TEMPORARY, error=f"APNs provider token cannot be made: {type(exc).__name__}") for m in messages]
        expiration = 0 if self.ttl == 0 else int(self.clock()) + self.ttl
        return self.http.send([self._request(m, bearer, expiration) for m in messages], self._interpret)

    def _request(self, message: OutgoingMessage, bearer: str, expiration: int) -> HttpRequest | SendResult:
        device = message.to.strip()
        if not device:
            return SendResult(message.key, PERMANENT, error="no APNs device token")
        headers = {
            "authorization": f"bearer {bearer}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": str(self.priority),
            "apns-expiration": str(expiration),
            "apns-id": apns_id(message.key),
            "content-type": "application/json",
        }
        if collapse_id := message.metadata.get("collapse_id"):
            headers["apns-collapse-id"] = str(collapse_id)[:64]  # APNs' limit: 64 bytes
        return HttpRequest(message.key, f"{self.base_url}/3/device/{quote(device, safe='')}", "POST", headers, apns_payload(message))

    def _interpret(self, request: HttpRequest, answer: HttpAnswer) -> SendResult:
        provider_id = answer.headers.get("apns-id") or None
        if 200 <= answer.status < 300:
            return classify(request.key, answer, provider_id=provider_id)
        body = answer.json()
        reason = str(body.get("reason") or "") if isinstance(body, dict) else ""
        error = f"APNs {answer.status} {reason}".rstrip()
        if answer.status == 410 or reason == "Unregistered":
            return SendResult(request.key, PERMANENT, error=error, address_invalid=True)
        if answer.status == 403 and reason == "ExpiredProviderToken":
            self.token.expire(request.headers["authorization"].removeprefix("bearer "))
            return SendResult(request.key, TEMPORARY, error=error)
        return classify(request.key, answer, error=error)

    def close(self) -> None:
        self.http.close()


def apns_id(key: str) -> str:
    return str(uuid.uuid5(APNS_ID_NAMESPACE, key))


def apns_payload(message: OutgoingMessage) -> bytes:
    alert = {name: message.parts[name] for name in ("title", "body") if message.parts.get(name)}
    payload: dict[str, Any] = {"aps": {"alert": alert}, "campaignctl_key": message.key}
    if message.parts.get("url"):
        payload["url"] = message.parts["url"]
    return json.dumps(payload, ensure_ascii=False).encode()


def _read_key(value: Any, project_root: Path, what: str) -> str:
    """The .p8 PEM from option ``key``: the PEM itself or a path to it."""
    text = str(value).strip()
    if text.startswith("-----BEGIN"):
        return text
    path = project_path(text, project_root)
    if not path.is_file():
        raise ValueError(f"{what}: option 'key': no such file {path} (give the AuthKey_....p8 path or its PEM, e.g. ${{env:APNS_KEY}})")
    return path.read_text(encoding="ascii")


@hookimpl
def register_channels(register):
    register("apns", ApnsSender.from_config)
