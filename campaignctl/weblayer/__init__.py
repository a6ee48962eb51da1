"""Web layers (on-site pop-ups): the rules the ``web_layer`` channel publishes
and the HTTP side (campaignctl.weblayer_app) serves to the snippet
(``snippet.js`` next to this file) on the retailer's site.

A layer is one rendered web_layer message for one customer. Its content is
personal (it may greet the customer by name), so layers are published per
visitor, in ``<dir>/visitors/<token>.json``, where the token is an HMAC of the
customer id with the channel's secret: the retailer's site computes it for a
signed-in visitor (:func:`visitor_token`) and puts it on the snippet's script
tag; without the secret nobody can name another customer's file.

Each layer carries an event signature (:func:`event_signature`) so the HTTP
side accepts impressions and clicks only for layers it handed out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SNIPPET = Path(__file__).with_name("snippet.js")
TRIGGERS = ("load", "exit", "delay")
RULES_VERSION = 1


def _key(secret: str | bytes, purpose: bytes) -> bytes:
    material = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not material:
        raise ValueError("the web layer secret is empty")
    return hmac.new(b"campaignctl web layer v1", material + b"\x00" + purpose, hashlib.sha256).digest()


def visitor_token(secret: str | bytes, customer_id: str | int) -> str:
    """What the retailer's site puts on the snippet for a signed-in customer."""
    return hmac.new(_key(secret, b"visitor"), str(customer_id).encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def event_signature(secret: str | bytes, message_key: str) -> str:
    """Proof that an impression or click names a layer this server handed out."""
    return hmac.new(_key(secret, b"event"), message_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def valid_token(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class Display:
    """When and how often a layer shows; set per channel and per campaign."""

    trigger: str = "load"  # one of TRIGGERS
    seconds: float = 0  # for "delay"
    per_session: int = 1
    per_day: int = 1
    priority: int = 0  # the highest-priority layer whose caps allow it is shown
    ttl_days: float = 7  # a layer not shown by then is dropped

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> "Display":
        known = ("trigger", "seconds", "per_session", "per_day", "priority", "ttl_days")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
        display = cls(**{name: options[name] for name in known if name in options})
        if display.trigger not in TRIGGERS:
            raise ValueError(f"{where}: trigger {display.trigger!r} is not one of {', '.join(TRIGGERS)}")
        if display.trigger == "delay" and not display.seconds > 0:
            raise ValueError(f"{where}: trigger 'delay' needs seconds > 0")
        if display.per_session < 1 or display.per_day < 1 or display.ttl_days <= 0:
            raise ValueError(f"{where}: per_session and per_day must be at least 1, ttl_days positive")
        return display


@dataclass(frozen=True)
class Layer:
    key: str  # the web_layer message's idempotency key: outcomes are recorded on it
    campaign: str
    content: Mapping[str, str]  # title, body, button, url (rendered template parts)
    display: Display
    expires: datetime
    signature: str

    def to_json(self) -> dict[str, Any]:
        d = self.display
        return {
            "key": self.key, "campaign": self.campaign, "priority": d.priority,
            "trigger": {"on": d.trigger, "seconds": d.seconds}, "caps": {"per_session": d.per_session, "per_day": d.per_day},
            "content": dict(self.content), "expires": self.expires.isoformat(), "sig": self.signature,
        }


CONTENT_PARTS = ("title", "body", "button", "url", "image")


def make_layer(secret: str, key: str, campaign: str, parts: Mapping[str, str], display: Display, now: datetime) -> Layer:
    content = {part: str(parts[part]).strip() for part in CONTENT_PARTS if parts.get(part)}
    if not content.get("body"):
        raise ValueError("a web layer needs a body")
    return Layer(key, campaign, content, display, now + timedelta(days=display.ttl_days), event_signature(secret, key))


@dataclass(frozen=True)
class RulesDirectory:
    """The published rules: one JSON file per visitor token."""

    root: Path
    secret: str = field(repr=False)

    def path(self, token: str) -> Path:
        return self.root / "visitors" / f"{token}.json"

    def read(self, token: str) -> list[dict[str, Any]]:
        """The visitor's layers as published (expired ones included); [] when none."""
        if not valid_token(token):
            return []
        try:
            return json.loads(self.path(token).read_text("utf-8")).get("layers", [])
        except FileNotFoundError:
            return []

    def publish(self, customer_id: str, layers: Sequence[Layer], now: datetime) -> None:
        """Add (or replace, by key: publishing again is harmless) a customer's
        layers, drop the expired, and write the file atomically."""
        token = visitor_token(self.secret, customer_id)
        kept = {layer["key"]: layer for layer in self.read(token) if not expired(layer, now)}
        kept.update((layer.key, layer.to_json()) for layer in layers)
        _write_atomically(self.path(token), {"version": RULES_VERSION, "layers": sorted(kept.values(), key=lambda x: x["key"])})

    def keys(self, customer_id: str) -> set[str]:
        return {layer["key"] for layer in self.read(visitor_token(self.secret, customer_id))}


def expired(layer: Mapping[str, Any], now: datetime) -> bool:
    return datetime.fromisoformat(layer["expires"]) <= now


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _write_atomically(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as sink:
            json.dump(document, sink, ensure_ascii=False, separators=(",", ":"))
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
