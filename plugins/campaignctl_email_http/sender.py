"""Built-in channel ``email_http``: e-mail through a provider's HTTP API.

The shape API-based e-mail providers share: messages are POSTed as JSON in
batches, with an ``Idempotency-Key`` header so that a retried request is not
sent twice by the provider. The wire format (docs/plugins.md) is campaignctl's
own; a provider with another format gets a small adapter plugin of this shape.

Answers:

- 2xx: the messages are sent; the provider id of each comes from the answer
  (``{"results": [{"id": ...} | {"error": ..., "temporary": bool}, ...]}`` one
  per message, or ``{"id": ...}`` for a single message);
- 429 and 5xx: temporary_failure; a ``Retry-After`` is honoured before the
  next request (waited for when short, otherwise the rest fail temporarily
  without a request); 401, 403, 408, 409 and 425 are temporary too: a wrong
  key or a request in flight is no fault of the messages;
- other 4xx: permanent_failure;
- no answer (connection refused, timeout): temporary_failure; the provider
  may have the request, and the Idempotency-Key makes the retry safe.

Only the standard library (http.client) is used; the connection is kept alive
across requests until close().
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from campaignctl.contracts import OutgoingMessage, SendResult, unknown_options
from campaignctl.http_sender import retry_after_seconds
from campaignctl.mime import ONE_CLICK, AddressError, ConfigError, Mailbox, MessageError, check_address, list_unsubscribe, message_id
from campaignctl.model import Channel
from campaignctl.options import ca_file_option, number_option

OPTIONS = (
    "url", "api_key", "auth_header", "auth_scheme", "from", "reply_to", "batch_size", "timeout", "max_retry_after", "ca_file",
)
TEMPORARY_4XX = {401, 403, 408, 409, 425, 429}


@dataclass(frozen=True, repr=False)
class HttpSettings:
    url: str
    sender: Mailbox
    reply_to: Mailbox | None = None
    api_key: str | None = None
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    batch_size: int = 50
    timeout: float = 30.0
    max_retry_after: float = 60.0
    ca_file: str | None = None

    def __repr__(self) -> str:  # the key is never shown
        return f"HttpSettings(url={self.url!r}, batch_size={self.batch_size})"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], project_root: Path) -> "HttpSettings":
        if problem := unknown_options(options, OPTIONS, "email_http"):
            raise ConfigError(problem)
        url = options.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"email_http: option 'url' must be an http(s) URL such as https://api.provider.example/v1/send, not {url!r}")
        auth_header = options.get("auth_header", "Authorization")
        if not isinstance(auth_header, str) or not auth_header or any(ch in auth_header for ch in ": \r\n"):
            raise ConfigError(f"email_http: option 'auth_header' must be a header name such as Authorization or X-Api-Key, not {auth_header!r}")
        api_key = options.get("api_key")
        if api_key is not None and (not isinstance(api_key, str) or any(ch in api_key for ch in "\r\n")):
            raise ConfigError("email_http: option 'api_key' must be one line of text (give it as ${env:NAME})")
        return cls(
            url=url,
            sender=Mailbox.parse(options.get("from"), "from"),
            reply_to=Mailbox.parse(options["reply_to"], "reply_to") if options.get("reply_to") is not None else None,
            api_key=api_key,
            auth_header=auth_header,
            auth_scheme=str(options.get("auth_scheme", "Bearer")),
            batch_size=number_option(options, "batch_size", int, 50, minimum=1, what="email_http", error=ConfigError),
            timeout=number_option(options, "timeout", float, 30.0, minimum=0.1, what="email_http", error=ConfigError),
            max_retry_after=number_option(options, "max_retry_after", float, 60.0, minimum=0, what="email_http", error=ConfigError),
            ca_file=ca_file_option(options.get("ca_file"), project_root, "email_http", ConfigError),
        )


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpEmailSender:
    """A ChannelSender POSTing batches of e-mails as JSON."""

    def __init__(self, settings: HttpSettings, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self._clock, self._sleep = clock, sleep
        self._connection: http.client.HTTPConnection | None = None
        self._not_before = 0.0  # from the provider's Retry-After
        self.requests_made = 0

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "HttpEmailSender":
        return cls(HttpSettings.from_options(channel.options, project_root))

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results: dict[str, SendResult] = {}
        ready: list[tuple[OutgoingMessage, dict[str, Any]]] = []
        for message in messages:
            try:
                ready.append((message, self._payload(message)))
            except MessageError as exc:
                results[message.key] = SendResult(message.key, "permanent_failure", error=str(exc), address_invalid=isinstance(exc, AddressError))
        size = self.settings.batch_size
        for start in range(0, len(ready), size):
            chunk = ready[start:start + size]
            for result in self._post(chunk):
                results[result.key] = result
        return [results[message.key] for message in messages]

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """One message of the request body; MessageError when it cannot be an e-mail."""
        settings, parts = self.settings, message.parts
        subject = parts.get("subject")
        if not isinstance(subject, str) or not subject.strip() or "\n" in subject or "\r" in subject:
            raise MessageError("the message has no subject (or one with a line break)")
        text, html, amp = parts.get("text"), parts.get("html"), parts.get("amp")
        if not text and not html:
            raise MessageError("the message has neither a text nor an html part")
        if amp and not html:
            raise MessageError("an AMP part needs an html part beside it, for clients without AMP")
        if not text:
            from campaignctl.templates import html_to_text

            text = html_to_text(html)
        headers = {"Message-ID": message_id(message.key, settings.sender.domain)}
        if "list_unsubscribe" in message.metadata:
            value, one_click = list_unsubscribe(message.metadata["list_unsubscribe"])
            headers["List-Unsubscribe"] = value.replace("\n ", " ")
            if one_click:
                headers["List-Unsubscribe-Post"] = ONE_CLICK
        payload = {
            "idempotency_key": message.key,
            "from": settings.sender.header,
            "to": check_address(message.to),
            "subject": subject,
            "text": text,
            "headers": headers,
            "tags": {"campaign": message.campaign, "customer_id": message.customer_id},
        }
        payload.update({name: value for name, value in (("html", html), ("amp", amp)) if value})
        if settings.reply_to is not None:
            payload["reply_to"] = settings.reply_to.header
        return payload

    def _post(self, chunk: list[tuple[OutgoingMessage, dict[str, Any]]]) -> list[SendResult]:
        keys = [message.key for message, _ in chunk]
        wait = self._not_before - self._clock()
        if wait > self.settings.max_retry_after:
            return _all(keys, "temporary_failure", f"the provider asked to wait {wait:.0f} s more (Retry-After)", retry_after=wait)
        if wait > 0:
            self._sleep(wait)
        body = json.dumps({"messages": [payload for _, payload in chunk]}, ensure_ascii=False).encode("utf-8")
        try:
            reply = self._request(body, idempotency_key(keys))
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return _all(keys, "temporary_failure", f"no answer from {self._where()}: {type(exc).__name__}: {exc}")
        return self._results(keys, reply)

    def _request(self, body: bytes, key: str) -> _Reply:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "Idempotency-Key": key,
            "User-Agent": "campaignctl-email-http",
        }
        if self.settings.api_key is not None:
            scheme = self.settings.auth_scheme
            headers[self.settings.auth_header] = f"{scheme} {self.settings.api_key}" if scheme else self.settings.api_key
        for attempt in (1, 2):  # a kept-alive connection the server closed is reopened once
            connection = self._open()
            try:
                connection.request("POST", self._path(), body=body, headers=headers)
                response = connection.getresponse()
                reply = _Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
                self.requests_made += 1
                if response.will_close:
                    self.close()
                return reply
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # Safe to repeat: the Idempotency-Key makes the provider take it once.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _results(self, keys: list[str], reply: _Reply) -> list[SendResult]:
        status = reply.status
        if 200 <= status < 300:
            return _accepted(keys, reply.body)
        detail = _error_text(reply.body)
        if status == 429 or status >= 500 or status in TEMPORARY_4XX:
            if (delay := retry_after_seconds(reply.headers.get("retry-after"))) is not None:
                self._not_before = self._clock() + delay
            return _all(keys, "temporary_failure", f"{self._where()} answered {status}{detail}", retry_after=delay)
        return _all(keys, "permanent_failure", f"{self._where()} answered {status}{detail}")

    def _open(self) -> http.client.HTTPConnection:
        if self._connection is None:
            parts = urlsplit(self.settings.url)
            if parts.scheme == "https":
                context = ssl.create_default_context(cafile=self.settings.ca_file)
                self._connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.settings.timeout, context=context)
            else:
                self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.settings.timeout)
        return self._connection

    def _path(self) -> str:
        parts = urlsplit(self.settings.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _where(self) -> str:
        parts = urlsplit(self.settings.url)  # scheme, host and path: credentials in a URL are not repeated
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def idempotency_key(keys: Sequence[str]) -> str:
    """The message's own key for a one-message request; for a batch, a digest of
    its keys, the same for the same batch retried."""
    if len(keys) == 1 and keys[0].isascii() and keys[0].isprintable() and len(keys[0]) <= 255:
        return keys[0]
    return "batch-" + hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def _accepted(keys: list[str], body: bytes) -> list[SendResult]:
    """Results from a 2xx answer: each message's id or its own refusal."""
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    items = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(items, list) or len(items) != len(keys):
        single = answer.get("id") if isinstance(answer, dict) and len(keys) == 1 else None
        items = [{"id": single}] + [{}] * (len(keys) - 1) if single is not None else [{}] * len(keys)
    results = []
    for key, item in zip(keys, items):
        item = item if isinstance(item, dict) else {}
        if item.get("error"):
            status = "temporary_failure" if item.get("temporary") else "permanent_failure"
            results.append(SendResult(key, status, error=str(item["error"])[:500]))
        else:
            provider_id = item.get("id")
            results.append(SendResult(key, "sent", provider_id=None if provider_id is None else str(provider_id)))
    return results


def _all(keys: list[str], status: str, error: str, retry_after: float | None = None) -> list[SendResult]:
    return [SendResult(key, status, error=error, retry_after=retry_after) for key in keys]


def _error_text(body: bytes) -> str:
    """A short reason from an error answer's body, if it has one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    message = answer.get("error") or answer.get("message") if isinstance(answer, dict) else None
    return f": {str(message)[:300]}" if message else ""
