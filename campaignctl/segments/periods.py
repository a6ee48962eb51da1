"""Durations, periods and birthdays resolved against ``now`` in Python.

Every time boundary a segment needs is computed here and rendered into SQL as
a literal, so the SQL never calls CURRENT_TIMESTAMP: a compiled query is a
pure function of the project and ``now``, and every dialect sees the same
instants.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

_DURATION = re.compile(r"^(\d+)([mhdwy])$")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1), "y": timedelta(days=365)}


def parse_duration(text: object) -> timedelta:
    """``30m``, ``1h``, ``7d``, ``2w``, ``1y`` (365 days) or ``0``; ValueError otherwise."""
    if isinstance(text, str):
        return _parse_duration_text(text)  # the planner asks per customer; memoised
    if text == 0:
        return timedelta(0)
    raise ValueError(f"{text!r} is not a duration (use 30m, 1h, 7d, 2w, 1y or 0)")


@lru_cache(maxsize=1024)
def _parse_duration_text(text: str) -> timedelta:
    if text == "0":
        return timedelta(0)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (use 30m, 1h, 7d, 2w, 1y or 0)")
    return int(match.group(1)) * _UNIT[match.group(2)]


def local_now(now: datetime, timezone: str) -> datetime:
    """``now`` in the project's time zone (a naive ``now`` is read as local time
    there). Calendar days and months are the project's; boundaries are rendered
    as instants with their UTC offset, so time-zone-aware data compares exactly."""
    zone = ZoneInfo(timezone)
    return now.replace(tzinfo=zone) if now.tzinfo is None else now.astimezone(zone)


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end); None means unbounded."""

    start: datetime | None
    end: datetime | None


def _midnight(day: date, tz: tzinfo | None) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)


def _month_start(day: date, months_back: int) -> date:
    month_index = day.year * 12 + day.month - 1 - months_back
    return date(month_index // 12, month_index % 12 + 1, 1)


def period_window(period: dict, now: datetime) -> Window:
    """The window of a ``period`` filter (format.md). ``to`` dates are inclusive.
    Raises ValueError with a message for the user on a malformed period."""
    if "last" in period:
        return Window(now - parse_duration(period["last"]), None)
    if "ago" in period:
        spans = [parse_duration(text) for text in period["ago"]]
        if len(spans) != 2:
            raise ValueError("ago takes two durations: [older, newer], e.g. [365d, 180d]")
        return Window(now - max(spans), now - min(spans))
    if "calendar" in period:
        return _calendar_window(period["calendar"], now.date(), now.tzinfo)
    if "from" in period or "to" in period:
        start = _midnight(date.fromisoformat(period["from"]), now.tzinfo) if "from" in period else None
        end = _midnight(date.fromisoformat(period["to"]) + timedelta(days=1), now.tzinfo) if "to" in period else None
        if start and end and start >= end:
            raise ValueError("from is after to")
        return Window(start, end)
    raise ValueError("a period needs one of: last, ago, from/to, calendar")


def _calendar_window(name: str, today: date, tz: tzinfo | None) -> Window:
    year_start, month_start = date(today.year, 1, 1), _month_start(today, 0)
    starts = {
        "this_year": (year_start, None),
        "last_year": (date(today.year - 1, 1, 1), year_start),
        "this_month": (month_start, None),
        "last_month": (_month_start(today, 1), month_start),
    }
    if name not in starts:
        raise ValueError(f"unknown calendar period {name!r} (this_year, last_year, this_month, last_month)")
    start, end = starts[name]
    return Window(_midnight(start, tz), _midnight(end, tz) if end else None)


def birthday_keys(today: date, within_days: int) -> list[int]:
    """month*100 + day of every birthday celebrated from today to today+N.

    Listing the calendar days in Python handles the year wrap for free; a
    29 February birthday is celebrated on 28 February in common years.
    """
    keys: set[int] = set()
    for offset in range(min(within_days, 366) + 1):
        day = today + timedelta(days=offset)
        keys.add(day.month * 100 + day.day)
        if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
            keys.add(229)
    return sorted(keys)


# The earliest instant whose local calendar day the compiled SQL gets exactly
# right: UTC offsets are listed from here on; older instants take the offset in
# force at this moment. Time-zone history before 1970 is patchy anyway.
OFFSETS_SINCE = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
_SCAN_STEP = timedelta(days=1)  # shorter than any gap between two offset changes in the tz database


@dataclass(frozen=True)
class OffsetChange:
    """From ``since`` (seconds since the Unix epoch) on, local time is UTC + ``offset`` seconds."""

    since: int
    offset: int


def utc_offsets(timezone: str, until: datetime) -> tuple[OffsetChange, ...]:
    """Every UTC offset ``timezone`` had between 1970 and ``until`` (and up to
    the end of that year), oldest first; the first one's ``since`` is OFFSETS_SINCE."""
    return _utc_offsets(timezone, until.year)


@lru_cache(maxsize=32)
def _utc_offsets(timezone: str, last_year: int) -> tuple[OffsetChange, ...]:
    # zoneinfo has no public list of transitions, so step through time a day at
    # a time and bisect each change to the second (~0.1 s, once per zone and year).
    zone = ZoneInfo(timezone)
    until = datetime(last_year + 1, 1, 1, tzinfo=ZoneInfo("UTC"))

    def offset_at(seconds: int) -> int:
        return int(datetime.fromtimestamp(seconds, zone).utcoffset().total_seconds())

    step = int(_SCAN_STEP.total_seconds())
    start, end = int(OFFSETS_SINCE.timestamp()), int(until.timestamp())
    changes = [OffsetChange(start, offset_at(start))]
    for moment in range(start + step, end + step, step):
        if offset_at(moment) != changes[-1].offset:
            low, high = moment - step, moment  # the change lies in (low, high]
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if offset_at(middle) != changes[-1].offset else (middle, high)
            changes.append(OffsetChange(high, offset_at(high)))
    return tuple(changes)
