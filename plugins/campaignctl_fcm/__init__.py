"""Built-in channel ``fcm``: mobile push through Firebase Cloud Messaging HTTP v1.

Each message is one ``POST {base_url}/v1/projects/{project_id}/messages:send``
with ``{"message": {"token", "notification": {title, body}, "data"}}``,
authorised by an OAuth access token obtained with the project's service account
(auth.py). Up to ``concurrency`` requests are in flight (campaignctl.http_sender).

FCM's answers: 2xx sent (the provider id is the message name FCM returns);
404 / ``UNREGISTERED``: the token is gone: permanent, and marked
``address_invalid`` so delivery records a "bounced" outcome for it; 401: the
access token was refused: it is dropped and the message retried; 429 (with
Retry-After) and 5xx: temporary; other 4xx: permanent with FCM's error.

Options: ``service_account`` (required: key file path or its JSON, e.g.
``${env:FCM_SERVICE_ACCOUNT}``), ``project_id`` (default: the account's),
``base_url`` (default https://fcm.googleapis.com), ``concurrency``,
``timeout``, ``ca_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence
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
from campaignctl.options import checked_options

from .auth import AccessTokens, AuthError, load_service_account

__version__ = "0.1.0"

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
OPTIONS = ("service_account", "project_id", "base_url", *HTTP_OPTIONS)
_GONE = {"UNREGISTERED"}  # FCM's errorCode for a token that no longer exists


class FcmSender:
    def __init__(self, url: str, tokens: AccessTokens, http: HttpBatchSender) -> None:
        self.url = url
        self.tokens = tokens
        self.http = http

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "FcmSender":
        what = f"fcm channel {channel.name!r}"
        options = checked_options(channel.options, OPTIONS, what)
        account = load_service_account(options.get("service_account"), project_root, what)
        project_id = options.get("project_id") or account.project_id
        if not project_id:
            raise ValueError(f"{what}: no project_id in the options or the service account")
        base_url = str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        http = sender_from_options(options, project_root, what=what)
        return cls(f"{base_url}/v1/projects/{quote(str(project_id), safe='')}/messages:send", AccessTokens(account, http), http)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        try:
            bearer = self.tokens.bearer()
        except AuthError as exc:  # nothing was sent; a later round or run may get a token
            return [SendResult(m.key, TEMPORARY, error=f"FCM authentication failed: {exc}") for m in messages]
        return self.http.send([self._request(m, bearer) for m in messages], self._interpret)

    def _request(self, message: OutgoingMessage, bearer: str) -> HttpRequest | SendResult:
        if not message.to.strip():
            return SendResult(message.key, PERMANENT, error="no FCM registration token")
        return HttpRequest(
            message.key, self.url, "POST",
            {"authorization": f"Bearer {bearer}", "content-type": "application/json; charset=utf-8"},
            fcm_body(message),
        )

    def _interpret(self, request: HttpRequest, answer: HttpAnswer) -> SendResult:
        body = answer.json()
        if 200 <= answer.status < 300:
            return classify(request.key, answer, provider_id=body.get("name") if isinstance(body, dict) else None)
        code, text = fcm_error(body)
        error = f"FCM {answer.status} {code}: {text}" if code or text else None
        if answer.status == 401:  # the access token expired or was revoked: fetch another, retry the message
            self.tokens.invalidate()
            return SendResult(request.key, TEMPORARY, error=error or "FCM 401: access token refused")
        if answer.status == 404 or code in _GONE:
            return SendResult(request.key, PERMANENT, error=error or f"FCM {answer.status}: token not registered", address_invalid=True)
        return classify(request.key, answer, error=error)

    def close(self) -> None:
        self.http.close()


def fcm_body(message: OutgoingMessage) -> bytes:
    """The JSON FCM HTTP v1 expects; ``data`` values must all be strings."""
    import json

    parts = message.parts
    notification = {name: parts[name] for name in ("title", "body") if parts.get(name)}
    data = {"campaign": message.campaign, "message_key": message.key}
    if parts.get("url"):
        data["url"] = parts["url"]
    return json.dumps({"message": {"token": message.to, "notification": notification, "data": data}}, ensure_ascii=False).encode()


def fcm_error(body: Any) -> tuple[str, str]:
    """(errorCode, message) from FCM's error answer: the specific code is in
    ``error.details[].errorCode``, the general one in ``error.status``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code = next((d.get("errorCode") for d in error.get("details") or [] if isinstance(d, dict) and d.get("errorCode")), None)
    return str(code or error.get("status") or ""), str(error.get("message") or "")[:300]


@hookimpl
def register_channels(register):
    register("fcm", FcmSender.from_config)
