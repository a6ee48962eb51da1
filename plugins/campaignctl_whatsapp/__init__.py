"""Built-in channel plugin ``whatsapp``: template messages through the WhatsApp
Cloud API (``POST {base_url}/{version}/{phone_number_id}/messages``), and its
status webhooks as outcomes.

Options (``channels.<name>.options``)::

    phone_number_id: "106540352242922"
    token: ${env:WHATSAPP_TOKEN}            # a system-user access token (Bearer)
    app_secret: ${env:WHATSAPP_APP_SECRET}  # checks X-Hub-Signature-256 on webhooks
    verify_token: ${env:WHATSAPP_VERIFY_TOKEN}  # the "Verify token" entered with the callback URL in Meta's app settings
    base_url: https://graph.facebook.com
    version: v21.0
    concurrency: 8
    timeout: 10
    templates:                              # campaignctl template -> approved WhatsApp template
      game_whatsapp:
        name: uyut_game
        language: ru
        body: "{{1}}, a prize is waiting for you at Uyut: pick one of three boxes {{2}}"
        url_button: "https://uyut.example/game?m={{1}}"   # optional: a URL button with a variable suffix

Marketing messages must be approved templates. The campaignctl template
renders the whole text (what plan shows and the outbox keeps); the approved
template's ``body`` text, with ``{{n}}`` where values go, tells which parts of
the rendered text are the parameters. A rendered text that does not fit the
approved one is refused, permanently, before anything is sent: the template
drifted from what Meta approved. Without ``body`` the whole text is ``{{1}}``.

Each request carries the message key as ``biz_opaque_callback_data``, which the
status webhooks return: sent -> nothing, delivered -> delivered, read ->
opened, failed -> bounced. Error codes: 131047 (re-engagement) and 131026
(undeliverable) are permanent; 130429, 80007 (rate limits) and 131056 (pair
rate limit) are temporary, like 5xx and connect time-outs; no answer to a
request sent whole is in doubt (campaignctl.http_sender).

Webhooks arrive at ``{tracking.base_url}/webhooks/<channel>`` of
``campaignctl serve``. Meta first checks that address with a GET carrying
``hub.mode=subscribe``, ``hub.verify_token`` and ``hub.challenge``; serve answers
the challenge when the token equals ``verify_token`` and refuses it (403)
otherwise or when the option is not set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from campaignctl.contracts import OutgoingMessage, SendResult, unknown_options
from campaignctl.hookspecs import hookimpl
from campaignctl.http_sender import PERMANENT, TEMPORARY, HttpAnswer, HttpBatchSender, HttpRequest, classify, provider_error
from campaignctl.model import Channel
from campaignctl.state import Outcome

__version__ = "0.1.0"

OPTIONS = ("phone_number_id", "token", "app_secret", "verify_token", "base_url", "version", "concurrency", "timeout", "templates")
TEMPLATE_OPTIONS = ("name", "language", "body", "url_button")
TEMPORARY_CODES = frozenset({130429, 80007, 131056, 131000, 133004})  # rate limits; 131000/133004: their service failing
PERMANENT_CODES = frozenset({131047, 131026})
STATUS_OUTCOMES = {"delivered": "delivered", "read": "opened", "failed": "bounced"}  # "sent" is ours already
SIGNATURE_HEADER = "x-hub-signature-256"


@dataclass(frozen=True)
class ApprovedTemplate:
    name: str
    language: str
    body: re.Pattern | None  # the approved text with a group per {{n}}, in n order
    url_button: re.Pattern | None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> "ApprovedTemplate":
        problem = unknown_options(options, TEMPLATE_OPTIONS, where)
        if problem:
            raise ValueError(problem)
        if not options.get("name") or not options.get("language"):
            raise ValueError(f"{where}: name and language are required (the approved template's)")
        return cls(str(options["name"]), str(options["language"]), _pattern(options.get("body"), where, "body"),
                   _pattern(options.get("url_button"), where, "url_button"))

    def components(self, message: OutgoingMessage) -> list[dict[str, Any]]:
        """The template's components for this message; ValueError when the
        rendered text does not fit the approved one."""
        text = (message.parts.get("body") or "").strip()
        values = _values(self.body, text, "body") if self.body else [text]
        components: list[dict[str, Any]] = [{"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}]
        if self.url_button:
            suffix = _values(self.url_button, (message.parts.get("url") or "").strip(), "url")
            components.append({"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": suffix[0]}]})
        return components


def _pattern(text: Any, where: str, name: str) -> re.Pattern | None:
    """The approved text as a regular expression: literal text, a lazy group per {{n}}."""
    if text is None:
        return None
    pieces = re.split(r"\{\{\s*(\d+)\s*\}\}", str(text))
    numbers = [int(n) for n in pieces[1::2]]
    if numbers != list(range(1, len(numbers) + 1)) or not numbers:
        raise ValueError(f"{where}.{name}: write the parameters as {{{{1}}}}, {{{{2}}}}, ... in order, as the approved template has them")
    regex = "".join(re.escape(piece) if i % 2 == 0 else "(.+?)" for i, piece in enumerate(pieces))
    return re.compile(regex, re.DOTALL)


def _values(pattern: re.Pattern, text: str, part: str) -> list[str]:
    found = pattern.fullmatch(text)
    if not found:
        raise ValueError(f"the rendered {part} does not fit the approved template's text; update the template or its mapping")
    return [value.strip() for value in found.groups()]


@dataclass
class WhatsAppSender:
    url: str
    token: str
    app_secret: str | None
    templates: Mapping[str, ApprovedTemplate]
    http: HttpBatchSender
    verify_token: str | None = None

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "WhatsAppSender":
        options = dict(channel.options)
        what = f"channel {channel.name!r} (whatsapp)"
        problem = unknown_options(options, OPTIONS, what)
        if problem:
            raise ValueError(problem)
        for required in ("phone_number_id", "token"):
            if not options.get(required):
                raise ValueError(f"{what}: set options.{required}" + (", e.g. token: ${env:WHATSAPP_TOKEN}" if required == "token" else ""))
        templates = {name: ApprovedTemplate.from_options(dict(spec), f"channels.{channel.name}.options.templates.{name}")
                     for name, spec in dict(options.get("templates") or {}).items()}
        base = str(options.get("base_url", "https://graph.facebook.com")).rstrip("/")
        http = HttpBatchSender(concurrency=int(options.get("concurrency", 8)), timeout=float(options.get("timeout", 10)))
        return cls(f"{base}/{options.get('version', 'v21.0')}/{options['phone_number_id']}/messages", str(options["token"]),
                   str(options["app_secret"]) if options.get("app_secret") else None, templates, http,
                   str(options["verify_token"]) if options.get("verify_token") else None)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:  # nothing to send needs no connection, even after close()
            return []
        return self.http.send([self._request(message) for message in messages], interpret)

    def _request(self, message: OutgoingMessage) -> HttpRequest | SendResult:
        template_name = str(message.metadata.get("template") or "")
        template = self.templates.get(template_name)
        if template is None:
            return SendResult(message.key, PERMANENT, error=f"template {template_name!r} has no approved WhatsApp template "
                                                           "(add it to the channel's options.templates)")
        phone = re.sub(r"[^\d]", "", message.to or "")
        if not 8 <= len(phone) <= 15:
            return SendResult(message.key, PERMANENT, error="the phone number is not an international number")
        try:
            components = template.components(message)
        except ValueError as exc:
            return SendResult(message.key, PERMANENT, error=str(exc))
        payload = {
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": phone, "type": "template",
            "template": {"name": template.name, "language": {"code": template.language}, "components": components},
            "biz_opaque_callback_data": message.key,
        }
        return HttpRequest(message.key, self.url, headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
                           content=json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    # ------------------------------------------------------------------ webhooks (campaignctl.contracts.WebhookParser)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[Outcome]:
        if not self.app_secret:
            raise PermissionError("options.app_secret is not set: webhooks cannot be checked")
        if not valid_signature(self.app_secret, body, headers.get(SIGNATURE_HEADER, "")):
            raise PermissionError("X-Hub-Signature-256 does not match")
        return status_outcomes(body)

    def verify_subscription(self, query: Mapping[str, str]) -> str | None:
        """Meta's webhook handshake (campaignctl.contracts.SubscriptionVerifier)."""
        token = query.get("hub.verify_token", "")
        if not self.verify_token or query.get("hub.mode") != "subscribe" or not query.get("hub.challenge"):
            return None
        if not hmac.compare_digest(token.encode(), self.verify_token.encode()):
            return None
        return query["hub.challenge"]

    def close(self) -> None:
        self.http.close()


def interpret(request: HttpRequest, answer: HttpAnswer) -> SendResult:
    """A Cloud API answer as a SendResult (module docstring)."""
    body = answer.json()
    body = body if isinstance(body, dict) else {}
    if 200 <= answer.status < 300:
        ids = [m.get("id") for m in body.get("messages", []) if isinstance(m, dict)]
        return SendResult(request.key, "sent", provider_id=ids[0] if ids else None)
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = error.get("code")
    text = f"HTTP {answer.status}: ({code}) {error.get('message', '')}".strip() if code else provider_error(answer)
    details = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
    text = f"{text} - {details}" if details else text
    if code in TEMPORARY_CODES:
        return SendResult(request.key, TEMPORARY, error=text, retry_after=classify(request.key, answer).retry_after)
    if code in PERMANENT_CODES:
        return SendResult(request.key, PERMANENT, error=text)
    return classify(request.key, answer, error=text)


def valid_signature(app_secret: str, body: bytes, header: str) -> bool:
    """X-Hub-Signature-256: "sha256=" + hex HMAC-SHA256 of the raw body with the app secret."""
    expected = "sha256=" + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.strip().encode("latin-1", "replace"), expected.encode("ascii"))


def status_outcomes(body: bytes) -> list[Outcome]:
    """Outcomes from a webhook's statuses; statuses of messages campaignctl did
    not send (no callback data) and incoming messages are left out."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(document, dict) or document.get("object") != "whatsapp_business_account":
        raise ValueError("not a WhatsApp Business Account webhook")
    outcomes = []
    for entry in document.get("entry") or []:
        for change in entry.get("changes") or []:
            for status in (change.get("value") or {}).get("statuses") or []:
                kind, key = STATUS_OUTCOMES.get(status.get("status")), status.get("biz_opaque_callback_data")
                if kind and key:
                    at = datetime.fromtimestamp(int(status.get("timestamp") or 0), timezone.utc)
                    payload = {"provider_id": status.get("id")}
                    if status.get("errors"):
                        payload["errors"] = [{"code": e.get("code"), "title": e.get("title")} for e in status["errors"]]
                    outcomes.append(Outcome(str(key), kind, at, payload))
    return outcomes


@hookimpl
def register_channels(register: Callable[[str, Any], None]) -> None:
    register("whatsapp", WhatsAppSender.from_config)
