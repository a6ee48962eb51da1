"""Who enters a campaign now, and at what instant (the entry instant is the
message keys' window, so it must not depend on which scheduler tick saw it).

- broadcast: at ``schedule.at``; runs within ENTRY_GRACE after it enrol anyone
  eligible not yet enrolled (e.g. after an interrupted apply), later runs nobody.
- recurring: on every run day (daily, or the weekly weekday, within from/until)
  while the project-local time is inside the window (the whole day without
  one); the entry instant is that day's window start.
- triggered by segment entry: members not enrolled (or allowed to re-enter),
  entering now.
- triggered by an event: the customer's latest event of that type, newer than
  their last entry and not older than the longest delay plus a day; it is the
  entry instant.

Re-entry: never while an enrollment is active; ``caps.per_customer`` bounds
entries ever; ``caps.reentry_after`` is the time since the last entry after
which a customer may enter again. Without ``reentry_after`` a customer enters
once, except for event triggers where every new event is a new entry.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Mapping
from zoneinfo import ZoneInfo

import numpy as np

from ..facts import NO_TIME, from_micros, to_micros
from .cascades import Flow
from .snapshot import ACTIVE, SnapshotEnrollment

ENTRY_GRACE = timedelta(days=1)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_at(text: str, project_timezone: str) -> datetime:
    """A schedule timestamp; without an offset it is in the project's zone."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(project_timezone))
    return moment.astimezone(timezone.utc)


def broadcast_entry(flow: Flow, now: datetime, project_timezone: str) -> datetime | None:
    at = parse_at(flow.schedule["at"], project_timezone)
    return at if at <= now < at + ENTRY_GRACE else None


def run_start(flow: Flow, day: date, project_timezone: str) -> datetime:
    window = flow.schedule.get("window")
    clock = time.fromisoformat(window["start"]) if window else time(0, 0)
    return datetime.combine(day, clock, tzinfo=ZoneInfo(project_timezone)).astimezone(timezone.utc)


def is_run_day(flow: Flow, day: date) -> bool:
    schedule = flow.schedule
    if schedule.get("from") and day < date.fromisoformat(schedule["from"]):
        return False
    if schedule.get("until") and day > date.fromisoformat(schedule["until"]):
        return False
    if schedule.get("every") == "weekly":
        return WEEKDAYS[day.weekday()] == schedule.get("weekday")
    return True


def recurring_entry(flow: Flow, now: datetime, project_timezone: str) -> datetime | None:
    local = now.astimezone(ZoneInfo(project_timezone))
    if not is_run_day(flow, local.date()):
        return None
    window = flow.schedule.get("window")
    if window:
        start, end = time.fromisoformat(window["start"]), time.fromisoformat(window["end"])
        inside = start <= local.time() < end if start <= end else (local.time() >= start or local.time() < end)
        if not inside:
            return None
    return run_start(flow, local.date(), project_timezone)


def may_enter(flow: Flow, previous: SnapshotEnrollment | None, entered_at: datetime) -> bool:
    """The re-entry rules for a customer whose latest enrollment is ``previous``."""
    if previous is None:
        return True
    if previous.status == ACTIVE:
        return False
    if entered_at <= previous.entered_at:
        return False  # this window (or this event) was already entered
    if flow.per_customer is not None and previous.entries >= flow.per_customer:
        return False
    if flow.reentry_after is not None:
        return entered_at >= previous.entered_at + flow.reentry_after
    return flow.kind == "triggered" and "event" in flow.trigger


def event_entry(flow: Flow, facts, customer_id: int, now: datetime, lookback: timedelta) -> datetime | None:
    seen = facts.latest_event(customer_id, flow.trigger["event"])
    if seen is None or seen > now or seen <= now - lookback:
        return None
    return seen.astimezone(timezone.utc).replace(microsecond=0)


def entries(flow: Flow, eligible, existing: Mapping[int, SnapshotEnrollment], facts, now: datetime,
            project_timezone: str, lookback: timedelta) -> list[tuple[int, datetime]]:
    """(customer_id, entry instant) for those of ``eligible`` (sorted ids) who enter now."""
    if flow.kind == "broadcast":
        at = broadcast_entry(flow, now, project_timezone)
        if at is None:
            return []
        return [(int(c), at) for c in eligible if may_enter(flow, existing.get(int(c)), at)]
    if flow.kind == "recurring":
        at = recurring_entry(flow, now, project_timezone)
        if at is None:
            return []
        return [(int(c), at) for c in eligible if may_enter(flow, existing.get(int(c)), at)]
    if "event" in flow.trigger:
        found = []
        for c in eligible:
            at = event_entry(flow, facts, int(c), now, lookback)
            if at is not None and may_enter(flow, existing.get(int(c)), at):
                found.append((int(c), at))
        return found
    return [(int(c), now) for c in eligible if may_enter(flow, existing.get(int(c)), now)]


def entering(flow: Flow, eligible: np.ndarray, existing: Mapping[int, SnapshotEnrollment], facts, now: datetime,
             project_timezone: str, lookback: timedelta) -> tuple[np.ndarray, np.ndarray]:
    """:func:`entries` as columns: (positions in ``eligible`` (sorted ids) of
    those who enter now, their entry instants in µs since the epoch)."""
    if flow.kind == "triggered" and "event" in flow.trigger:
        seen = facts.latest_event_micros(flow.trigger["event"], eligible)
        now_us = to_micros(now)
        keep = (seen != NO_TIME) & (seen <= now_us) & (seen > to_micros(now - lookback))
        instants = seen - seen % 1_000_000  # to the second, as the message key's window
    else:
        if flow.kind == "broadcast":
            at = broadcast_entry(flow, now, project_timezone)
        elif flow.kind == "recurring":
            at = recurring_entry(flow, now, project_timezone)
        else:
            at = now
        if at is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        keep = np.ones(len(eligible), dtype=bool)
        instants = np.full(len(eligible), to_micros(at), dtype=np.int64)
    if existing:
        # The re-entry rules, one by one, for those state has enrolled before.
        known = np.fromiter(existing, dtype=np.int64, count=len(existing))
        for position in np.flatnonzero(keep & np.isin(eligible, known)).tolist():
            keep[position] = may_enter(flow, existing[int(eligible[position])], from_micros(int(instants[position])))
    positions = np.flatnonzero(keep)
    return positions, instants[positions]
