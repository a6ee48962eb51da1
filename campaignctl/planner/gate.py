"""The one gate every send passes through.

In order: suppression of inactive customers (before enrolling and before each
step), reachability per channel (consent, contact, unsubscribes; see
cascades.resolve_channel), quiet hours and recurring send windows in the
customer's time zone (deferred, never dropped), then per-campaign budgets and
frequency caps across campaigns, decided in priority order (higher first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from ..arrays import locate
from ..facts import CustomerFact, to_micros
from ..model import FrequencyCap, Project
from ..segments.periods import parse_duration
from .snapshot import SentMessage

SUPPRESSED = "suppressed_inactive"
QUIET_HOURS = "quiet_hours"
SEND_WINDOW = "send_window"
FREQUENCY_CAP = "frequency_cap"
BUDGET = "budget"


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _zone(fact: CustomerFact | None, project_timezone: str) -> ZoneInfo:
    if fact is not None and fact.timezone:
        try:
            return ZoneInfo(fact.timezone)
        except (KeyError, ValueError):  # an unknown zone in the data: the project's
            pass
    return ZoneInfo(project_timezone)


def _inside(moment: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end  # the window spans midnight


def _next_at(local: datetime, clock: time, zone: ZoneInfo) -> datetime:
    """The first instant at or after ``local`` when the wall clock shows ``clock``."""
    candidate = datetime.combine(local.date(), clock, tzinfo=zone)
    if candidate < local:
        candidate = datetime.combine(local.date() + timedelta(days=1), clock, tzinfo=zone)
    # A wall time skipped by a DST jump normalises to the instant after the gap.
    return candidate.astimezone(timezone.utc).astimezone(zone)


def quiet_until(send_at: datetime, fact: CustomerFact | None, project_timezone: str,
                quiet: tuple[str, str] | None) -> datetime | None:
    """None when ``send_at`` is outside the quiet hours in the customer's zone
    (their timezone fact, else the project's); else the end of the quiet window."""
    if quiet is None:
        return None
    zone = _zone(fact, project_timezone)
    local = send_at.astimezone(zone)
    start, end = _clock(quiet[0]), _clock(quiet[1])
    if start == end or not _inside(local.time(), start, end):
        return None
    return _next_at(local, end, zone).astimezone(timezone.utc)


def window_until(send_at: datetime, fact: CustomerFact | None, project_timezone: str,
                 window: Mapping[str, str] | None) -> datetime | None:
    """None inside a recurring campaign's send window (customer's zone); else its next start."""
    if not window:
        return None
    zone = _zone(fact, project_timezone)
    local = send_at.astimezone(zone)
    start, end = _clock(window["start"]), _clock(window["end"])
    if start == end or _inside(local.time(), start, end):
        return None
    return _next_at(local, start, zone).astimezone(timezone.utc)


def deferral(send_at: datetime, fact: CustomerFact | None, project_timezone: str, quiet: tuple[str, str] | None,
             window: Mapping[str, str] | None) -> tuple[datetime, str] | None:
    """When a send at ``send_at`` may happen instead, and the rule that moved it;
    None when it may go now. Both rules are applied until both hold."""
    moved: tuple[datetime, str] | None = None
    at = send_at
    for _ in range(4):
        for rule, until in ((QUIET_HOURS, quiet_until(at, fact, project_timezone, quiet)),
                            (SEND_WINDOW, window_until(at, fact, project_timezone, window))):
            if until is not None:
                at = until
                moved = (at, rule)  # the rule that set the final time
                break
        else:
            return moved
    return moved


@dataclass
class FrequencyCaps:
    """Counts sends per customer against every cap: those already sent (state)
    and those accepted in this plan (all sent "now", so inside every window).
    Customers are positions in ``customers`` (sorted ids), channels positions in
    ``channels``, so a campaign's candidates are checked and counted at once."""

    caps: Sequence[FrequencyCap]
    customers: np.ndarray  # sorted customer ids
    channels: tuple[str, ...]
    counts: np.ndarray  # [cap, customer]: sends counted against each cap so far
    matches: np.ndarray  # [cap, channel]: whether the cap counts that channel

    @classmethod
    def build(cls, project: Project, now: datetime, sends: Iterable[SentMessage], customers: np.ndarray,
              channels: Sequence[str]) -> "FrequencyCaps":
        caps = project.policies.frequency_caps
        customers = np.asarray(customers, dtype=np.int64)
        matches = np.array([[_matches(cap, channel) for channel in channels] for cap in caps], dtype=bool).reshape(len(caps), len(channels))
        counts = np.zeros((len(caps), len(customers)), dtype=np.int64)
        sends = list(sends)
        if caps and sends and len(customers):
            ids = np.fromiter((sent.customer_id for sent in sends), dtype=np.int64, count=len(sends))
            at = locate(customers, ids)
            candidate = at >= 0  # others are not candidates of this plan: nothing to check
            sent_at = np.array([to_micros(sent.sent_at) for sent in sends], dtype=np.int64)
            kinds = [sent.channel for sent in sends]
            for index, cap in enumerate(caps):
                counted = candidate & (sent_at > to_micros(now - parse_duration(cap.per)))
                if cap.channel != "any":
                    counted &= np.array([channel == cap.channel for channel in kinds], dtype=bool)
                np.add.at(counts[index], at[counted], 1)
        return cls(caps, customers, tuple(channels), counts, matches)

    def positions(self, customer_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.customers, np.asarray(customer_ids, dtype=np.int64))

    def blocked(self, positions: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Whether a send to each customer (position) on each channel (code) would break a cap now."""
        blocked = np.zeros(len(positions), dtype=bool)
        for index, cap in enumerate(self.caps):
            blocked |= self.matches[index, channels] & (self.counts[index, positions] >= cap.max)
        return blocked

    def record(self, positions: np.ndarray, channels: np.ndarray) -> None:
        """Count sends; each customer at most once per call (one message per campaign)."""
        for index in range(len(self.caps)):
            self.counts[index, positions] += self.matches[index, channels]


def _matches(cap: FrequencyCap, channel: str) -> bool:
    return cap.channel == "any" or cap.channel == channel


def month_days(now_local: datetime, days: Iterable[date]) -> list[date]:
    """The ``days`` that fall in ``now_local``'s calendar month."""
    return [day for day in days if (day.year, day.month) == (now_local.year, now_local.month)]
