"""Signed, expiring tokens for the links in a message: unsubscribe, click, open.

A token is ``<payload>.<signature>``, both urlsafe base64 without padding. The
payload is compact JSON ``[purpose, message key, expiry (unix seconds)]``, plus
the target URL for a click; the signature is HMAC-SHA256 over the payload's
base64 text with a key derived for that purpose from the project secret, so a
click token can never pass as an unsubscribe token even if payloads collide.

Nothing is kept server-side: the token carries what the server needs, and the
signature is what makes it trustworthy (docs/tracking.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone

PURPOSES = ("unsubscribe", "click", "open")
_CODES = {"unsubscribe": "u", "click": "c", "open": "o"}  # one letter in the payload keeps URLs short
_PURPOSE_OF = {code: purpose for purpose, code in _CODES.items()}

# Why a token was refused. Only EXPIRED tokens are authentic: their payload is kept.
MALFORMED, BAD_SIGNATURE, EXPIRED, WRONG_PURPOSE = "malformed", "bad signature", "expired", "wrong purpose"

_KDF_SALT = b"campaignctl tokens v1"
MAX_TOKEN_LENGTH = 4096  # longer is not a token we made (URLs stay well under browsers' limits)


@dataclass(frozen=True)
class TokenPayload:
    """What a token says, once its signature checked out."""

    purpose: str  # one of PURPOSES
    message_key: str
    expires: int  # unix seconds
    target: str | None = None  # the URL a click goes to

    def expired(self, now: datetime) -> bool:
        return now.timestamp() >= self.expires


@dataclass(frozen=True)
class Rejected:
    """Why a token was refused; ``payload`` only for an authentic but expired token
    (a click after the attribution window still reaches its signed target)."""

    reason: str  # MALFORMED | BAD_SIGNATURE | EXPIRED | WRONG_PURPOSE
    payload: TokenPayload | None = None

    def __bool__(self) -> bool:  # `if not result:` reads as "refused"
        return False


def derive_key(secret: str | bytes, purpose: str) -> bytes:
    """HKDF-SHA256 (RFC 5869; one output block) of the project secret for one purpose."""
    if purpose not in _CODES:
        raise ValueError(f"unknown token purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    material = secret.encode("utf-8") if isinstance(secret, str) else secret
    pseudo_random_key = hmac.new(_KDF_SALT, material, hashlib.sha256).digest()
    return hmac.new(pseudo_random_key, purpose.encode("ascii") + b"\x01", hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and verifies tokens with keys derived from one secret."""

    def __init__(self, secret: str | bytes):
        if not secret:
            raise ValueError("the token secret is empty")
        self._keys = {purpose: derive_key(secret, purpose) for purpose in PURPOSES}

    def sign(self, purpose: str, message_key: str, expires: datetime | int, target: str | None = None) -> str:
        if purpose not in self._keys:
            raise ValueError(f"unknown token purpose {purpose!r}; known: {', '.join(PURPOSES)}")
        if (purpose == "click") != (target is not None):
            raise ValueError("a click token needs a target URL, and only a click token has one")
        seconds = int(expires.timestamp()) if isinstance(expires, datetime) else int(expires)
        fields: list = [_CODES[purpose], message_key, seconds] + ([target] if target is not None else [])
        body = _b64encode(json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return f"{body}.{self._signature(purpose, body)}"

    def verify(self, token: str, purpose: str, now: datetime | None = None) -> TokenPayload | Rejected:
        """The payload of a valid token for ``purpose``, or why it is refused.
        The signature is checked before anything the payload says is believed."""
        payload = self._authentic(token)
        if isinstance(payload, Rejected):
            return payload
        if payload.purpose != purpose:
            return Rejected(WRONG_PURPOSE)
        if payload.expired(now or datetime.now(timezone.utc)):
            return Rejected(EXPIRED, payload)
        return payload

    def _authentic(self, token: str) -> TokenPayload | Rejected:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            return Rejected(MALFORMED)
        body, signature = token.split(".")
        fields = _decode_fields(body)
        if fields is None:
            return Rejected(MALFORMED)
        purpose = _PURPOSE_OF[fields[0]]
        # compare_digest: the time taken says nothing about how much of a forged signature was right.
        if not hmac.compare_digest(signature.encode("ascii", "replace"), self._signature(purpose, body).encode("ascii")):
            return Rejected(BAD_SIGNATURE)
        return TokenPayload(purpose, fields[1], fields[2], fields[3] if len(fields) == 4 else None)

    def _signature(self, purpose: str, body: str) -> str:
        return _b64encode(hmac.new(self._keys[purpose], body.encode("ascii"), hashlib.sha256).digest())


def _decode_fields(body: str) -> list | None:
    """The payload's fields when they have the shape sign() writes, else None."""
    try:
        fields = json.loads(_b64decode(body).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(fields, list) or len(fields) not in (3, 4) or fields[0] not in _PURPOSE_OF:
        return None
    if not isinstance(fields[1], str) or not isinstance(fields[2], int) or isinstance(fields[2], bool):
        return None
    if (fields[0] == "c") != (len(fields) == 4) or (len(fields) == 4 and not isinstance(fields[3], str)):
        return None
    return fields
