"""An OutgoingMessage as an RFC 5322 e-mail: the bytes an SMTP server is given.

Parts ``subject``, ``text``, ``html`` and optionally ``amp`` become one
multipart/alternative in the order clients expect: text/plain first,
text/x-amp-html next (AMP clients take it; every other client skips it) and
text/html last, because a client shows the last alternative it understands.

The Message-ID is derived from the idempotency key and the sender's domain,
so a retried message carries the same id and a provider or a bounce report can
be matched to it. ``List-Unsubscribe`` comes from
``metadata["list_unsubscribe"]``; with an https URI it gets
``List-Unsubscribe-Post`` (RFC 8058 one-click), and both are covered by the
DKIM signature when a key is configured, as RFC 8058 requires.
"""

from __future__ import annotations

import email.headerregistry
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Mapping

from .contracts import OutgoingMessage


class _HeaderClasses(email.headerregistry.HeaderRegistry):
    """The stdlib makes a new class each time it parses a header (most of the
    cost of building an e-mail); one class per header name is enough."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        name = name.lower()
        if (made := self._made.get(name)) is None:
            made = self._made[name] = super().__getitem__(name)
        return made


# 7bit: a body that is not plain short-lined ASCII is sent quoted-printable or
# base64 (the stdlib picks), so no 8BITMIME or SMTPUTF8 is needed from a server.
# refold_source="none": a header set raw (List-Unsubscribe) is kept as folded
# here; refolding would turn a long URI into RFC 2047 encoded words, which
# no client reads as a URI.
POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none", header_factory=_HeaderClasses())
MAX_URI = 900  # a folded header line must stay under SMTP's 998 characters
HEADER_TOKEN = re.compile(r"[!-~]{1,900}")  # a header value set raw: one line, no spaces, no line breaks

# Signed when present. From, Subject and the List-Unsubscribe pair are listed
# once more ("oversigned") so that nobody can add a second copy after signing.
SIGNED_HEADERS = (
    "from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
    "list-unsubscribe", "list-unsubscribe-post", "x-campaignctl-key",
)
OVERSIGNED_HEADERS = ("from", "subject", "list-unsubscribe", "list-unsubscribe-post")
ONE_CLICK = "List-Unsubscribe=One-Click"


class MessageError(ValueError):
    """This message cannot be built as an e-mail (a bad address, a missing part):
    sending it again would fail the same way."""


class AddressError(MessageError):
    """The recipient's address is not an e-mail address: it never will be."""


class ConfigError(ValueError):
    """The channel's e-mail settings are wrong; the message says which option."""


@dataclass(frozen=True)
class Mailbox:
    """The parsed ``from`` (or ``reply_to``) option."""

    header: str  # as written: "Uyut Home <news@uyut.example>"
    address: str  # news@uyut.example, for the SMTP envelope
    domain: str  # uyut.example, for Message-IDs

    @classmethod
    def parse(cls, value: Any, option: str) -> "Mailbox":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"option {option!r} must be an e-mail address such as 'Shop <news@shop.example>'")
        _, address = email.utils.parseaddr(value)
        try:
            checked = check_address(address)
        except MessageError as exc:
            raise ConfigError(f"option {option!r}: {exc}; write it as 'Name <address>', the name in double quotes if it has a comma") from None
        return cls(value.strip(), checked, checked.rsplit("@", 1)[1].lower())


@dataclass(frozen=True, repr=False)
class DkimKey:
    """What DKIM signing needs; the private key never appears in a repr or an error."""

    domain: str
    selector: str
    private_key: bytes  # PEM

    def __repr__(self) -> str:
        return f"DkimKey(domain={self.domain!r}, selector={self.selector!r}, private_key=<hidden>)"

    @classmethod
    def from_options(cls, options: Any, project_root: Path) -> "DkimKey":
        """From the ``dkim`` option: {domain, selector, private_key | private_key_file};
        checked by signing a small message now, so a bad key fails at start-up."""
        if not isinstance(options, Mapping):
            raise ConfigError("option 'dkim' must be a mapping with domain, selector and private_key or private_key_file")
        from .contracts import unknown_options

        if problem := unknown_options(options, ("domain", "selector", "private_key", "private_key_file"), "dkim"):
            raise ConfigError(problem)
        for name in ("domain", "selector"):
            if not isinstance(options.get(name), str) or not options[name].strip():
                raise ConfigError(f"dkim: option {name!r} is required (a DNS name such as 'shop.example' / 's2025')")
        key = cls(options["domain"].strip().lower(), options["selector"].strip(), _private_key(options, project_root))
        _check_key(key)
        return key


def _private_key(options: Mapping[str, Any], project_root: Path) -> bytes:
    inline, path = options.get("private_key"), options.get("private_key_file")
    if (inline is None) == (path is None):
        raise ConfigError("dkim: give exactly one of 'private_key' (PEM, e.g. ${env:DKIM_KEY}) or 'private_key_file' (a path)")
    if inline is not None:
        if not isinstance(inline, str) or "PRIVATE KEY" not in inline:
            raise ConfigError("dkim: 'private_key' is not a PEM private key (-----BEGIN ... PRIVATE KEY-----)")
        return inline.encode("ascii", "replace")
    file = Path(str(path))
    file = file if file.is_absolute() else project_root / file
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"dkim: cannot read 'private_key_file' {str(file)!r}: {exc.strerror}") from None


def _check_key(key: DkimKey) -> None:
    import dkim

    probe = b"From: probe@" + key.domain.encode() + b"\r\nSubject: probe\r\n\r\nprobe\r\n"
    try:
        dkim.sign(probe, key.selector.encode(), key.domain.encode(), key.private_key, include_headers=[b"from"])
    except Exception as exc:  # dkimpy's KeyFormatError and friends; their text holds no key material
        raise ConfigError(f"dkim: the private key cannot sign ({type(exc).__name__}); give an RSA private key in PEM") from None


@dataclass(frozen=True)
class Email:
    message_id: str  # "<...@domain>", also the provider id a sender reports
    envelope_from: str
    recipient: str
    data: bytes  # CRLF lines, ready for SMTP DATA


def message_id(key: str, domain: str) -> str:
    """The same Message-ID for every attempt of one message."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}.campaignctl@{domain}>"


def check_address(address: Any) -> str:
    """``address`` as an ASCII addr-spec (an internationalised domain in IDNA
    form), or MessageError saying what is wrong with it."""
    if not isinstance(address, str) or not address.strip():
        raise AddressError("no e-mail address")
    address = address.strip()
    if any(ch in address for ch in "\r\n\t <>,;\"()[]\\") or any(ord(ch) < 32 for ch in address):
        raise AddressError(f"not a single e-mail address: {address!r}")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "." not in domain.strip(".") or ".." in domain:
        raise AddressError(f"not an e-mail address: {address!r}")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(f"not a valid domain in {address!r}") from None
    if not local.isascii():
        raise AddressError(f"a non-ASCII local part needs SMTPUTF8, which campaignctl does not use: {address!r}")
    return f"{local}@{domain}"


def key_header(key: str) -> str:
    """The X-Campaignctl-Key value: the key itself when it is printable ASCII
    without spaces that fits on one header line, else its SHA-256."""
    return key if HEADER_TOKEN.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()


def list_unsubscribe(uris: Any) -> tuple[str, bool]:
    """The List-Unsubscribe value and whether one-click (an https URI) is offered."""
    if isinstance(uris, str) or not isinstance(uris, Sequence) or not uris:
        raise MessageError("metadata list_unsubscribe must be a non-empty list of https: or mailto: URIs")
    for uri in uris:
        # http: is kept (RFC 2369 allows it) for a local tracking.base_url, which the
        # project schema permits for testing; refusing it failed every e-mail for good.
        # Only https gets one-click: providers POST to nothing else (RFC 8058).
        if not isinstance(uri, str) or not uri.lower().startswith(("https://", "http://", "mailto:")):
            raise MessageError(f"list_unsubscribe: {uri!r} is not an https: or mailto: URI")
        if not uri.isascii() or any(ch in uri for ch in "<>, \r\n\t"):
            raise MessageError(f"list_unsubscribe: {uri!r} must be ASCII without spaces, commas or angle brackets (percent-encode them)")
        if len(uri) > MAX_URI:
            raise MessageError(f"list_unsubscribe: a URI of {len(uri)} characters is longer than {MAX_URI}")
    # One URI per line: folded only between URIs, never inside one.
    return ",\n ".join(f"<{uri}>" for uri in uris), any(uri.lower().startswith("https://") for uri in uris)


def build_email(
    message: OutgoingMessage,
    sender: Mailbox,
    *,
    reply_to: Mailbox | None = None,
    dkim_key: DkimKey | None = None,
    now: datetime | None = None,
) -> Email:
    """The e-mail for ``message``, DKIM-signed when a key is given; MessageError
    when the message cannot be an e-mail."""
    recipient = check_address(message.to)
    mail = EmailMessage(policy=POLICY)
    mail["From"] = sender.header
    mail["To"] = recipient
    try:
        mail["Subject"] = _subject(message.parts)
    except ValueError as exc:  # a line break in the subject: header injection, refused
        raise MessageError(f"subject: {exc}") from None
    mail["Date"] = email.utils.format_datetime(now or datetime.now(timezone.utc))
    mail["Message-ID"] = message_id(message.key, sender.domain)
    # Raw, never folded: folding put a key longer than the first line whole on a
    # continuation line, and parsers (Python's email) then read it back with a
    # leading space, matching no key in the ledger.
    mail.set_raw("X-Campaignctl-Key", key_header(message.key))
    if reply_to is not None:
        mail["Reply-To"] = reply_to.header
    if "list_unsubscribe" in message.metadata:
        value, one_click = list_unsubscribe(message.metadata["list_unsubscribe"])
        mail.set_raw("List-Unsubscribe", value)
        if one_click:
            mail["List-Unsubscribe-Post"] = ONE_CLICK
    _set_body(mail, message.parts)
    data = mail.as_bytes(policy=POLICY)
    if dkim_key is not None:
        data = sign(data, dkim_key)
    return Email(mail["Message-ID"], sender.address, recipient, data)


def _subject(parts: Mapping[str, str]) -> str:
    subject = parts.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        raise MessageError("the message has no subject")
    return subject


def _set_body(mail: EmailMessage, parts: Mapping[str, str]) -> None:
    html, amp, text = parts.get("html"), parts.get("amp"), parts.get("text")
    if amp and not html:
        raise MessageError("an AMP part needs an html part beside it, for clients without AMP")
    if not text and not html:
        raise MessageError("the message has neither a text nor an html part")
    if not text:
        from .templates import html_to_text  # imported on use: Jinja is not needed otherwise

        text = html_to_text(html)
    mail.set_content(text)
    if amp:
        mail.add_alternative(amp, subtype="x-amp-html")
    if html:
        mail.add_alternative(html, subtype="html")


def signed_headers(data: bytes) -> list[bytes]:
    """The signed header names present in ``data``, then the oversigned ones again."""
    header_block = data.split(b"\r\n\r\n", 1)[0].lower()
    present = [name for name in SIGNED_HEADERS if header_block.startswith(name.encode() + b":") or b"\r\n" + name.encode() + b":" in header_block]
    return [name.encode() for name in present] + [name.encode() for name in OVERSIGNED_HEADERS]


def sign(data: bytes, key: DkimKey) -> bytes:
    """``data`` with a DKIM-Signature header in front (relaxed/relaxed)."""
    import dkim

    signature = dkim.sign(
        data, key.selector.encode(), key.domain.encode(), key.private_key,
        canonicalize=(b"relaxed", b"relaxed"), include_headers=signed_headers(data),
    )
    return signature + data
