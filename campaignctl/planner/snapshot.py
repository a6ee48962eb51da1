"""The view of state the planner reads: built from a StateStore by the caller
(apply / the CLI), by hand in tests. Everything here is data; the planner
indexes it itself."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Iterator, Mapping

ACTIVE = "active"


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SnapshotEnrollment:
    """A customer's (latest) enrollment in a campaign, as state keeps it."""

    campaign: str
    customer_id: int
    version: str
    group: str  # treatment | control | holdout
    arm: str | None
    step: int  # the next cascade step to run (0-based)
    status: str  # active | exited | completed
    entered_at: datetime
    next_step_at: datetime | None
    last_message_key: str | None = None  # the message the next step's `if` looks at
    entries: int = 1  # how many times this customer has entered the campaign, this one included
    exit_reason: str | None = None


@dataclass(frozen=True)
class SentMessage:
    """A message already sent, for frequency caps (only those within the longest cap window are needed)."""

    customer_id: int
    sent_at: datetime
    channel: str  # project channel name
    campaign: str


@dataclass(frozen=True)
class StateSnapshot:
    versions: Mapping[str, str] = field(default_factory=_empty)  # campaign -> current (latest applied) version
    # "campaign/version" -> the definition recorded for that version (planner.campaign_definition);
    # needed for versions that still have enrollments in flight under `on_change: continue`.
    definitions: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)
    enrollments: tuple[SnapshotEnrollment, ...] = ()  # one per (campaign, customer): the latest, any status
    recent_sends: tuple[SentMessage, ...] = ()
    unsubscribed: frozenset[tuple[int, str]] = frozenset()  # (customer_id, channel kind)
    # (customer_id, channel kind, address fingerprint or None) of addresses the provider said are gone
    # (a bounce with address_invalid); the customer is held on that kind while their address is that one
    address_invalid: frozenset[tuple[int, str, str | None]] = frozenset()
    outcomes: Mapping[str, frozenset[str]] = field(default_factory=_empty)  # message key -> outcome types
    spend: Mapping[str, float] = field(default_factory=_empty)  # campaign -> spent so far (messages and incentives)
    spend_this_month: float = 0.0  # the whole project, in the current calendar month (project time zone)
    promo_codes_left: Mapping[str, int] = field(default_factory=_empty)  # promo pool -> codes it can still hand out
    # promo pool -> who holds its codes: issue keys campaign/customer/offer, or campaign/*/offer for a shared code
    promo_code_holders: Mapping[str, frozenset[str]] = field(default_factory=_empty)

    def fingerprint(self) -> str:
        """sha256 over a canonical, sorted rendering: equal snapshots, equal fingerprints,
        whatever order the store returned rows in."""
        digest = hashlib.sha256()
        for line in self._lines():
            digest.update(line.encode())
            digest.update(b"\n")
        return digest.hexdigest()

    def _lines(self) -> Iterator[str]:
        yield "snapshot/1"
        for campaign in sorted(self.versions):
            yield f"version\t{campaign}\t{self.versions[campaign]}"
        for key in sorted(self.definitions):
            yield f"definition\t{key}\t{canonical_json(self.definitions[key])}"
        for e in sorted(self.enrollments, key=lambda e: (e.campaign, e.customer_id)):
            yield "enrollment\t" + "\t".join(_text(value) for value in (
                e.campaign, e.customer_id, e.version, e.group, e.arm, e.step, e.status, e.entered_at,
                e.next_step_at, e.last_message_key, e.entries, e.exit_reason))
        for s in sorted(self.recent_sends, key=lambda s: (s.customer_id, s.sent_at, s.channel, s.campaign)):
            yield f"sent\t{s.customer_id}\t{_text(s.sent_at)}\t{s.channel}\t{s.campaign}"
        for customer_id, kind in sorted(self.unsubscribed):
            yield f"unsubscribed\t{customer_id}\t{kind}"
        for customer_id, kind, address in sorted(self.address_invalid, key=lambda row: (row[0], row[1], row[2] or "")):
            yield f"address_invalid\t{customer_id}\t{kind}\t{address or '-'}"
        for key in sorted(self.outcomes):
            yield f"outcomes\t{key}\t{','.join(sorted(self.outcomes[key]))}"
        for campaign in sorted(self.spend):
            yield f"spend\t{campaign}\t{float(self.spend[campaign])!r}"
        yield f"spend_this_month\t{float(self.spend_this_month)!r}"
        for pool in sorted(self.promo_codes_left):  # holders change only with these counts
            yield f"promo_codes_left\t{pool}\t{int(self.promo_codes_left[pool])}"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def plain(value: Any) -> Any:
    """Mappings (read-only, located) and sequences as plain JSON-able dicts and lists."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
