"""Built-in channel ``sms_http``: SMS through any HTTP gateway, described in options.

SMS gateways differ only in the shape of one request, so the request is
configured rather than coded: the URL, the method, headers (credentials as
``${env:NAME}``), and a body template (JSON or a form) in which the
placeholders ``{to}``, ``{text}``, ``{sender}``, ``{key}``, ``{campaign}``,
``{customer_id}``, ``{parts}`` and ``{encoding}`` are filled per message. A
string that is exactly one placeholder takes the value's own type (``{parts}``
stays a number). The provider's id is read from the answer at ``id_path``
(dots between keys and list indexes, e.g. ``messages.0.id``).

Answers (campaignctl.http_sender.classify): 2xx sent; 429 (with its
Retry-After), 5xx, connect time-outs and connection errors temporary (no
answer to a request sent whole is in doubt: the gateway may have it); 401 and 403
temporary too (a wrong key is no fault of the messages, which must still go
once it is fixed); any other 4xx permanent. Requests go out at most ``concurrency`` at a time over keep-alive
connections kept between batches.

The text is what the template rendered (``parts["body"]``); its length in
parts (campaignctl.sms) is what the plan charged and is available to the
gateway as ``{parts}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

from campaignctl import sms
from campaignctl.contracts import OutgoingMessage, SendResult, unknown_options
from campaignctl.hookspecs import hookimpl
from campaignctl.model import Channel

__version__ = "0.1.0"

OPTIONS = ("url", "method", "headers", "body", "format", "sender", "id_path", "concurrency", "timeout", "ca_file")
FIELDS = ("to", "text", "sender", "key", "campaign", "customer_id", "parts", "encoding")
PLACEHOLDER = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")
METHODS = ("POST", "PUT", "PATCH")
FORMATS = {"json": "application/json", "form": "application/x-www-form-urlencoded"}


@dataclass(frozen=True, repr=False)
class GatewaySettings:
    """The gateway's request as configured; repr leaves headers out (credentials)."""

    url: str
    body: Any
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    format: str = "json"
    sender: str = ""
    id_path: tuple[str, ...] = ()
    concurrency: int = 8
    timeout: float = 10.0
    ca_file: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], project_root: Path) -> "GatewaySettings":
        """Checked settings; ValueError says which option is wrong and how."""
        if problem := unknown_options(options, OPTIONS, "sms_http"):
            raise ValueError(problem)
        url = options.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError("sms_http: option 'url' must be the gateway's http(s) URL, e.g. https://sms.example/api/send")
        method = str(options.get("method", "POST")).upper()
        if method not in METHODS:
            raise ValueError(f"sms_http: option 'method' must be one of {', '.join(METHODS)}, not {method!r}")
        body_format = options.get("format", "json")
        if body_format not in FORMATS:
            raise ValueError(f"sms_http: option 'format' must be json or form, not {body_format!r}")
        body = options.get("body")
        if not isinstance(body, (dict, list)) or "{text}" not in json.dumps(body) or "{to}" not in json.dumps(body):
            raise ValueError("sms_http: option 'body' must be a mapping that places {to} and {text}, "
                             "e.g. {phone: '{to}', message: '{text}'}")
        if body_format == "form" and (not isinstance(body, dict) or any(isinstance(v, (dict, list)) for v in body.values())):
            raise ValueError("sms_http: with format: form, 'body' must be a flat mapping of field names to values")
        headers = options.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("sms_http: option 'headers' must map header names to strings (secrets as ${env:NAME})")
        concurrency, timeout = options.get("concurrency", 8), options.get("timeout", 10)
        if not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
            raise ValueError("sms_http: option 'concurrency' must be a whole number from 1 to 64")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError("sms_http: option 'timeout' must be a positive number of seconds")
        ca_file = options.get("ca_file")
        if ca_file is not None:
            ca_path = Path(ca_file) if Path(ca_file).is_absolute() else project_root / ca_file
            ca_file = str(ca_path)
        id_path = tuple(part for part in str(options.get("id_path", "")).split(".") if part)
        return cls(url, body, method, dict(headers), body_format, str(options.get("sender", "")), id_path, concurrency,
                   float(timeout), ca_file)


class SmsHttpSender:
    """Sends each SMS as one request to the configured gateway."""

    def __init__(self, settings: GatewaySettings, channel: str = "sms"):
        from campaignctl.http_sender import HttpBatchSender

        self.settings = settings
        self.channel = channel
        verify: object = True
        if settings.ca_file:
            import ssl

            verify = ssl.create_default_context(cafile=settings.ca_file)
        self.http = HttpBatchSender(concurrency=settings.concurrency, timeout=settings.timeout, verify=verify,
                                    user_agent=f"campaignctl-sms-http/{__version__}")

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "SmsHttpSender":
        return cls(GatewaySettings.from_options(channel.options, project_root), channel.name)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        return self.http.send([self._request(message) for message in messages], self._interpret)

    def close(self) -> None:
        self.http.close()

    # -- one message

    def _request(self, message: OutgoingMessage):
        from campaignctl.http_sender import HttpRequest

        checked = sms.sms_to_send(message)
        if isinstance(checked, SendResult):
            return checked
        to, text = checked
        values = {"to": to, "text": text, "sender": self.settings.sender, "key": message.key, "campaign": message.campaign,
                  "customer_id": message.customer_id, "parts": sms.part_count(text), "encoding": sms.encoding(text)}
        body = fill(self.settings.body, values)
        if self.settings.format == "json":
            content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        else:
            content = urlencode({name: "" if value is None else value for name, value in body.items()}).encode("ascii")
        headers = {name: fill(value, values) for name, value in self.settings.headers.items()}
        headers.setdefault("Content-Type", FORMATS[self.settings.format] + ("; charset=utf-8" if self.settings.format == "json" else ""))
        return HttpRequest(message.key, self.settings.url, self.settings.method, headers, content)

    def _interpret(self, request, answer) -> SendResult:
        from campaignctl.http_sender import classify

        provider_id = None
        if 200 <= answer.status < 300 and self.settings.id_path:
            found = at_path(answer.json(), self.settings.id_path)
            provider_id = str(found) if found is not None else None
        result = classify(request.key, answer, provider_id=provider_id)
        if answer.status in (401, 403):
            # A wrong or expired key is no fault of the messages: once it is fixed they must still go.
            return SendResult(request.key, "temporary_failure", error=f"{result.error} (check the gateway credentials in headers)")
        return result


def fill(template: Any, values: Mapping[str, Any]) -> Any:
    """``template`` with placeholders replaced; a string that is exactly one
    placeholder becomes the value itself (a number stays a number)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template)
    if isinstance(template, dict):
        return {key: fill(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, values) for value in template]
    return template


def at_path(document: Any, path: Sequence[str]) -> Any:
    """The value at a dotted path of keys and list indexes, or None."""
    for part in path:
        if isinstance(document, dict):
            document = document.get(part)
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return None
    return document


@hookimpl
def register_channels(register):
    register("sms_http", SmsHttpSender.from_config)
