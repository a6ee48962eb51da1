"""Retargeting export: customers no message can reach, as hashed e-mail and
phone for the ad networks' customer-list matching.

Raw contacts never leave this module: each address is normalised the way the
network documents, hashed with SHA-256 (lowercase hex) and only the hash is
written. The formats and their sources:

- ``google``: a Google Ads Customer Match file, CSV with the English headers
  ``Email,Phone`` (support.google.com/google-ads/answer/7659867). Hashed data:
  e-mail trimmed and lowercased, phone in E.164 (``+79161234567``) before
  hashing. Google documents removing dots before ``@gmail.com`` only for
  enhanced conversions, not for Customer Match, so no Gmail rule is applied.
- ``meta``: a Meta customer-list file for a custom audience, CSV with the
  identifier headers ``email,phone`` (Meta Business Help Centre, "How to format
  a customer list"). Phone as digits with the country code, no ``+``; e-mail
  trimmed and lowercased. Meta documents no dot or plus rule either.
- ``hashes``: one hash per line (e-mails, then phones in E.164), for a network
  that takes a plain list.

A phone without an international prefix (``+`` or ``00``) cannot be put in
E.164 without guessing the country; it is skipped and counted, never guessed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

FORMATS = ("google", "meta", "hashes")
_HEADERS = {"google": ("Email", "Phone"), "meta": ("email", "phone")}


class ExportError(ValueError):
    """The export cannot be made as asked (unknown segment, bad format...)."""


@dataclass(frozen=True)
class HashedContact:
    """One customer's identifiers after normalising and hashing; None where absent."""

    email: str | None
    phone_e164: str | None  # hash of "+79161234567" (Google, TikTok)
    phone_digits: str | None  # hash of "79161234567" (Meta)


@dataclass(frozen=True)
class AudienceExport:
    """What an export wrote; counts only, never a contact."""

    path: Path
    format: str
    audience: str  # the segment name, or "unreachable"
    customers: int  # in the audience
    exported: int  # with at least one identifier written
    emails: int
    phones: int
    phones_skipped: int  # no international prefix: not guessable into E.164

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "audience": self.audience, "customers": self.customers,
                "exported": self.exported, "emails": self.emails, "phones": self.phones, "phones_skipped": self.phones_skipped}


# --------------------------------------------------------------------------- normalising and hashing


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalise_email(raw: str | None) -> str | None:
    """Trimmed and lowercased; None when it is not an address at all."""
    if not raw:
        return None
    email = raw.strip().lower()
    return email if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email) else None


def normalise_phone(raw: str | None) -> str | None:
    """E.164 (``+`` and 8 to 15 digits) from an international number written
    with ``+`` or ``00`` and any punctuation; None when the country is unknown."""
    if not raw:
        return None
    text = raw.strip()
    if text.startswith("+"):
        digits = re.sub(r"\D", "", text)
    elif text.startswith("00"):
        digits = re.sub(r"\D", "", text)[2:]
    else:
        return None
    if re.search(r"[^\d\s().+\-/]", text) or not 8 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return "+" + digits


def hash_contact(email: str | None, phone: str | None) -> HashedContact:
    normal_email, e164 = normalise_email(email), normalise_phone(phone)
    return HashedContact(
        sha256_hex(normal_email) if normal_email else None,
        sha256_hex(e164) if e164 else None,
        sha256_hex(e164[1:]) if e164 else None,
    )


# --------------------------------------------------------------------------- files


def render_export(contacts: Sequence[HashedContact], file_format: str) -> str:
    """The file's text: CSV with the network's headers, or one hash per line."""
    if file_format == "hashes":
        emails = sorted({c.email for c in contacts if c.email})
        phones = sorted({c.phone_e164 for c in contacts if c.phone_e164})
        return "".join(f"{value}\n" for value in emails + phones)
    if file_format not in _HEADERS:
        raise ExportError(f"unknown format {file_format!r}; known: {', '.join(FORMATS)}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_HEADERS[file_format])
    phone = (lambda c: c.phone_e164) if file_format == "google" else (lambda c: c.phone_digits)
    rows = {(c.email or "", phone(c) or "") for c in contacts if c.email or phone(c)}
    writer.writerows(sorted(rows))
    return out.getvalue()


def _write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only: hashes are still personal data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as sink:
            sink.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_export(rows: Iterable[Mapping[str, Any]], path: Path, file_format: str, audience: str) -> AudienceExport:
    """Hash each row's ``email`` and ``phone`` and write the file."""
    if file_format not in FORMATS:
        raise ExportError(f"unknown format {file_format!r}; known: {', '.join(FORMATS)}")
    contacts, skipped, customers = [], 0, 0
    for row in rows:
        customers += 1
        contact = hash_contact(row.get("email"), row.get("phone"))
        skipped += bool(row.get("phone")) and contact.phone_e164 is None
        contacts.append(contact)
    _write_private(path, render_export(contacts, file_format))
    return AudienceExport(
        path, file_format, audience, customers,
        exported=sum(1 for c in contacts if c.email or c.phone_e164),
        emails=sum(1 for c in contacts if c.email), phones=sum(1 for c in contacts if c.phone_e164), phones_skipped=skipped,
    )


# --------------------------------------------------------------------------- audiences


def unreachable_ids(facts: Any, unsubscribed: Iterable[tuple[int, str]] = ()) -> list[int]:
    """Customers no channel kind with consents can reach: for every kind the
    latest consent is not granted, the contact is missing, or the customer
    unsubscribed from it in campaignctl's own outcomes."""
    from .facts import CONSENT_KINDS

    opted_out = set(unsubscribed)
    return sorted(
        customer_id for customer_id in facts.table.column("customer_id").to_pylist()
        if all(facts.get(customer_id).reachable(kind) is not None or (customer_id, kind) in opted_out for kind in CONSENT_KINDS)
    )


def export_audience(project: Any, path: Path, *, segment: str | None, file_format: str, now: datetime,
                    environ: Mapping[str, str] | None = None) -> AudienceExport:
    """Export ``segment``'s members, or with ``segment=None`` every customer
    unreachable on every channel, hashed in ``file_format``."""
    from .connect import open_data_source
    from .facts import load_customer_facts

    if segment is not None and segment not in project.segments:
        raise ExportError(f"no segment named {segment!r}; defined: {', '.join(sorted(project.segments)) or 'none'}")
    if file_format not in FORMATS:
        raise ExportError(f"unknown format {file_format!r}; known: {', '.join(FORMATS)}")
    source = open_data_source(project, environ, check=False)
    try:
        if segment is None:
            facts = load_customer_facts(project, source, None, now)
            ids = unreachable_ids(facts, _unsubscribed(project, environ))
        else:
            from .segments import evaluate_segments

            ids = evaluate_segments(project, source, [segment], now=now).members[segment].tolist()
            facts = load_customer_facts(project, source, ids, now)
    finally:
        source.close()
    rows = [facts.get(customer_id).contacts for customer_id in ids if facts.get(customer_id) is not None]
    return write_export(rows, path, file_format, segment or "unreachable")


def _unsubscribed(project: Any, environ: Mapping[str, str] | None) -> list[tuple[int, str]]:
    """(customer, channel kind) of every unsubscribe campaignctl recorded, and
    of every address a provider said is gone (no channel reaches it either)."""
    from .connect import open_state_store

    kinds = {name: channel.kind for name, channel in project.channels.items()}
    store = open_state_store(project, environ)
    try:
        opted_out = [*store.unsubscribed(), *((customer, channel) for customer, channel, _ in store.invalid_addresses())]
        return [(int(customer), kinds[channel]) for customer, channel in opted_out if channel in kinds]
    finally:
        store.close()
