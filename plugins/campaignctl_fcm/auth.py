"""Google service-account authentication for FCM HTTP v1 (RFC 7523).

The service account's private key signs a short JWT (RS256) naming the
account, the FCM scope and the token endpoint; the endpoint (the account's
``token_uri``) exchanges it for an OAuth access token, which is cached until
shortly before it expires.

PyJWT signs (with cryptography underneath) rather than google-auth: google-auth
would bring its own HTTP stack (requests) and caching for what is one signed
JWT and one form POST, and PyJWT is needed anyway for the APNs provider token.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from campaignctl.http_sender import HttpBatchSender, HttpRequest, TransportFailure, provider_error
from campaignctl.options import project_path

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # seconds; Google's maximum
REFRESH_MARGIN = 300  # seconds before expiry when a cached access token is replaced
_REQUIRED = ("client_email", "private_key", "token_uri")


class AuthError(Exception):
    """No access token could be had; the message holds no secret."""


@dataclass(frozen=True, repr=False)
class ServiceAccount:
    """The fields of a Google service-account key file that signing needs."""

    client_email: str
    private_key: str = field(repr=False)  # PEM
    private_key_id: str | None
    token_uri: str
    project_id: str | None

    def __repr__(self) -> str:
        return f"ServiceAccount({self.client_email!r})"


def load_service_account(value: Any, project_root: Path, what: str) -> ServiceAccount:
    """The account from option ``service_account``: the key file's JSON itself
    (typically ``${env:FCM_SERVICE_ACCOUNT}``) or a path to it, relative to the
    project. Errors name the option and the path, never the key."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}: option 'service_account' is required: a service-account key file path or its JSON (e.g. ${{env:FCM_SERVICE_ACCOUNT}})")
    text = value.strip()
    source = "the JSON in option 'service_account'"
    if not text.startswith("{"):
        path = project_path(text, project_root)
        if not path.is_file():
            raise ValueError(f"{what}: option 'service_account': no such file {path}")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what}: {source} is not JSON (line {exc.lineno}, column {exc.colno})") from None
    missing = [name for name in _REQUIRED if not isinstance(data, dict) or not data.get(name)]
    if missing:
        raise ValueError(f"{what}: {source} lacks {', '.join(missing)}; download a new key in the Google Cloud console (IAM > Service accounts > Keys)")
    if data.get("type", "service_account") != "service_account":
        raise ValueError(f"{what}: {source} is a {data['type']!r} credential, not a service account key")
    return ServiceAccount(data["client_email"], data["private_key"], data.get("private_key_id"), data["token_uri"], data.get("project_id"))


class AccessTokens:
    """OAuth access tokens for one service account, fetched when needed and
    reused until ``REFRESH_MARGIN`` seconds before they expire."""

    def __init__(self, account: ServiceAccount, http: HttpBatchSender, clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self.http = http
        self.clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def bearer(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._expires_at - REFRESH_MARGIN:
                self._token, self._expires_at = self._fetch()
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (the provider refused it), so the next call fetches one."""
        with self._lock:
            self._token = None

    def assertion(self, now: float) -> str:
        import jwt

        claims = {"iss": self.account.client_email, "scope": SCOPE, "aud": self.account.token_uri,
                  "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME}
        headers = {"kid": self.account.private_key_id} if self.account.private_key_id else None
        try:
            return jwt.encode(claims, self.account.private_key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError) as exc:  # an unreadable PEM; cryptography's text holds no key material
            raise AuthError(f"the service account's private_key cannot sign: {type(exc).__name__}") from None

    def _fetch(self) -> tuple[str, float]:
        now = self.clock()
        form = urlencode({"grant_type": GRANT_TYPE, "assertion": self.assertion(now)}).encode()
        request = HttpRequest("oauth-token", self.account.token_uri, "POST", {"content-type": "application/x-www-form-urlencoded"}, form)
        try:
            answer = self.http.call(request)
        except TransportFailure as failure:
            raise AuthError(f"token endpoint unreachable: {type(failure.cause).__name__}: {failure.cause}") from None
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise AuthError(f"token endpoint refused the service account: {provider_error(answer)}")
        return str(body["access_token"]), now + float(body.get("expires_in", 3600))
