"""Built-in channel plugin ``telegram``: messages through a Telegram bot, with
the Bot API's ``sendMessage`` (https://core.telegram.org/bots/api#sendmessage).

Options (``channels.<name>.options``)::

    token: ${env:TELEGRAM_BOT_TOKEN}
    chat_ids: data/telegram_chats.csv   # customer_id,chat_id: who started the bot
    base_url: https://api.telegram.org  # a local Bot API server, or a test peer
    button: Open                        # label of the link button (the template's url part)
    concurrency: 8
    timeout: 10

A bot can only write to someone who started it, by chat id, never by phone
number; the retailer's bot records chat ids when customers link their
account, and ``chat_ids`` maps customers to them. A message whose customer has
no chat id (and whose address is not itself a chat id) fails permanently, with why.

The body is plain text written by a template; it is sent with
``parse_mode: HTML`` fully escaped, so a customer's name can never become
markup, and the template's url is an inline keyboard button.

Answers (Bot API ``{"ok": false, "error_code", "description", "parameters"}``):
429 is temporary after ``parameters.retry_after`` seconds; 403 "bot was blocked
by the user" (or "user is deactivated") is permanent and marks the address
invalid, so deliver() records a bounce and the customer is not written to
again; 400 "chat not found" and other 4xx are permanent; 5xx and connect
time-outs temporary; no answer to a request sent whole is in doubt
(campaignctl.http_sender: the Bot API does not de-duplicate).
"""

from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from campaignctl.contracts import OutgoingMessage, SendResult
from campaignctl.hookspecs import hookimpl
from campaignctl.http_sender import PERMANENT, TEMPORARY, HttpAnswer, HttpBatchSender, HttpRequest, classify, provider_error
from campaignctl.model import Channel
from campaignctl.options import checked_options, project_path

__version__ = "0.1.0"

OPTIONS = ("token", "chat_ids", "base_url", "button", "concurrency", "timeout")
MAX_TEXT = 4096  # sendMessage: 1-4096 characters after entities parsing
_CHAT_ID = re.compile(r"-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31}")
_BLOCKED = ("bot was blocked by the user", "user is deactivated", "bot was kicked")


def telegram_text(message: OutgoingMessage) -> str:
    """The message as Telegram HTML: the template's text, escaped whole."""
    body = message.parts.get("body") or message.parts.get("text") or ""
    return html.escape(body.strip(), quote=False)


@dataclass
class TelegramSender:
    base_url: str
    token: str
    chat_ids: Mapping[str, str]
    button: str
    http: HttpBatchSender

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "TelegramSender":
        options = checked_options(channel.options, OPTIONS, f"channel {channel.name!r} (telegram)")
        if not options.get("token"):
            raise ValueError(f"channel {channel.name!r} (telegram): set options.token, e.g. token: ${{env:TELEGRAM_BOT_TOKEN}}")
        chat_ids = _read_chat_ids(project_root, options["chat_ids"]) if options.get("chat_ids") else {}
        http = HttpBatchSender(concurrency=int(options.get("concurrency", 8)), timeout=float(options.get("timeout", 10)))
        return cls(str(options.get("base_url", "https://api.telegram.org")).rstrip("/"), str(options["token"]), chat_ids,
                   str(options.get("button", "Open")), http)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:  # nothing to send needs no connection, even after close()
            return []
        return self.http.send([self._request(message) for message in messages], interpret)

    def _request(self, message: OutgoingMessage) -> HttpRequest | SendResult:
        chat_id = self.chat_ids.get(message.customer_id) or (message.to if _CHAT_ID.fullmatch(message.to or "") else None)
        if chat_id is None:
            return SendResult(message.key, PERMANENT, error=f"no Telegram chat id for customer {message.customer_id}: "
                                                           "a bot can only write to customers who started it (options.chat_ids)")
        text = telegram_text(message)
        if not text or len(text) > MAX_TEXT:
            return SendResult(message.key, PERMANENT, error=f"the text has {len(text)} characters; Telegram takes 1 to {MAX_TEXT}")
        payload: dict[str, Any] = {"chat_id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id, "text": text, "parse_mode": "HTML"}
        url = message.parts.get("url")
        if url:
            payload["reply_markup"] = {"inline_keyboard": [[{"text": self.button, "url": url}]]}
        return HttpRequest(message.key, f"{self.base_url}/bot{self.token}/sendMessage", headers={"content-type": "application/json"},
                           content=json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    def close(self) -> None:
        self.http.close()


def interpret(request: HttpRequest, answer: HttpAnswer) -> SendResult:
    """A Bot API answer as a SendResult (module docstring)."""
    body = answer.json()
    body = body if isinstance(body, dict) else {}
    description = str(body.get("description") or "")
    error = f"HTTP {answer.status}: {description}" if description else provider_error(answer)
    if answer.status == 200 and body.get("ok") is True:
        return SendResult(request.key, "sent", provider_id=f"telegram:{body.get('result', {}).get('message_id')}")
    if answer.status == 429:
        retry = (body.get("parameters") or {}).get("retry_after")
        return SendResult(request.key, TEMPORARY, error=error, retry_after=float(retry) if isinstance(retry, (int, float)) else None)
    if answer.status == 403 and any(reason in description.lower() for reason in _BLOCKED):
        return SendResult(request.key, PERMANENT, error=error, address_invalid=True)
    return classify(request.key, answer, error=error)


def _read_chat_ids(root: Path, name: str) -> dict[str, str]:
    path = project_path(name, root)
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as exc:
        raise ValueError(f"options.chat_ids: cannot read {name}: {exc.strerror}") from None
    if rows and not {"customer_id", "chat_id"} <= set(rows[0]):
        raise ValueError(f"options.chat_ids: {name} needs the header customer_id,chat_id")
    bad = [number for number, row in enumerate(rows, start=2) if not _CHAT_ID.fullmatch(row["chat_id"] or "")]
    if bad:
        raise ValueError(f"{name}:{bad[0]}:1: chat_id is not a Telegram chat id (an integer or @channelname)")
    return {row["customer_id"].strip(): row["chat_id"].strip() for row in rows}


@hookimpl
def register_channels(register: Callable[[str, Any], None]) -> None:
    register("telegram", TelegramSender.from_config)
