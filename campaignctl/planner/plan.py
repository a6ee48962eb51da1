"""A Plan is data: what apply would do, and why, at one moment.

Every list is sorted, so equal inputs give byte-equal JSON. ``Plan.to_json``
and ``Plan.from_json`` are symmetric: a saved plan (``plan --out``) is applied
later as approved, and refused when ``state_fingerprint`` no longer matches.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import types
import typing
from collections import abc, defaultdict
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Mapping

from ..sms import SmsEstimate

FORMAT_VERSION = 1

# CampaignChange.action
CREATE, CHANGE, REMOVE, UNCHANGED = "create", "change", "remove", "unchanged"
# EnrollmentAction.action: what apply writes for one (campaign, customer)
ENTER = "enter"  # a new enrollment (any group)
SEND = "send"  # the row after this plan's message for it is sent (step advanced)
SKIP = "skip"  # steps skipped (their `if` did not hold, or no channel could reach the customer)
DEFER = "defer"  # the due step waits (quiet hours, send window): next_step_at moved
EXIT = "exit"  # left before the end: goal reached, `unless` happened, suppressed
MIGRATE = "migrate"  # moved to the campaign's new version (on_change: migrate)
STOP = "stop"  # stopped because the campaign changed (on_change: stop) or was removed


@dataclass(frozen=True)
class CampaignChange:
    name: str
    action: str  # create | change | remove | unchanged
    old_version: str | None
    new_version: str | None
    in_flight: str | None  # continue | migrate | stop: what happens to enrollments on other versions
    in_flight_count: int  # active enrollments it affects
    kind: str = ""  # broadcast | recurring | triggered ("" for removed)
    enabled: bool = True
    definition: Mapping[str, Any] | None = None  # for create/change: what state records for new_version


@dataclass(frozen=True)
class CampaignAudience:
    """Who the campaign targets now and how the eligible customers split."""

    campaign: str
    segment: str
    members: int  # in the audience segment
    eligible: int  # after `exclude`
    holdout: int  # eligible customers in the global holdout
    control: int  # eligible, not holdout, in the campaign's control share
    treatment: int
    arms: tuple[tuple[str, int], ...] = ()  # treatment split by arm
    entering: int = 0  # enrollments this plan adds (all groups)
    suppressed: int = 0  # eligible but inactive too long; not enrolled


@dataclass(frozen=True)
class EnrollmentAction:
    """The enrollment row as it stands after this plan is applied."""

    action: str  # enter | send | skip | defer | exit | migrate | stop
    campaign: str
    version: str
    customer_id: int
    group: str  # treatment | control | holdout
    arm: str | None
    step: int  # the next step to run
    status: str  # active | exited | completed
    entered_at: datetime
    next_step_at: datetime | None
    exit_reason: str | None = None
    entries: int = 1
    last_message_key: str | None = None


@dataclass(frozen=True)
class MessageAction:
    key: str  # campaign/version/customer/step/window: the ledger's idempotency key
    campaign: str
    version: str
    customer_id: int
    step: int
    channel: str  # project channel name
    template: str
    offer: str | None
    cost: float
    due_at: datetime
    arm: str | None = None


class Rows(abc.Sequence):
    """An immutable sequence of ``cls`` (a frozen dataclass) kept as one list
    per field, as the planner computes them. A plan at a million customers
    has about as many enrollments: summaries, JSON and apply read the columns,
    and a row object is built only when someone reads that row (building them
    all would cost a second of every plan). Compares equal to the tuple of
    its rows."""

    __slots__ = ("cls", "names", "columns")

    def __init__(self, cls: type, columns: typing.Sequence[typing.Sequence]):
        """``columns``: one sequence per field of ``cls``, in field order, of equal lengths."""
        self.cls = cls
        self.names = tuple(f.name for f in fields(cls))
        self.columns = tuple(column if type(column) is list else list(column) for column in columns)  # the planner hands over fresh lists: no copy
        if len(self.columns) != len(self.names) or len({len(column) for column in self.columns}) > 1:
            raise ValueError(f"Rows of {cls.__name__} need {len(self.names)} columns of equal length")

    @classmethod
    def of(cls, row_type: type, rows: typing.Iterable) -> "Rows":
        """The rows of objects ``rows``."""
        rows = list(rows)
        return cls(row_type, [[getattr(row, name) for row in rows] for name in (f.name for f in fields(row_type))])

    @classmethod
    def concat(cls, row_type: type, parts: typing.Iterable["Rows"]) -> "Rows":
        parts = list(parts)
        count = len(fields(row_type))
        return cls(row_type, [list(itertools.chain.from_iterable(part.columns[i] for part in parts)) for i in range(count)])

    def column(self, name: str) -> list:
        """The values of field ``name`` (the list itself: do not change it)."""
        return self.columns[self.names.index(name)]

    def take(self, order: typing.Iterable[int]) -> "Rows":
        """The rows at positions ``order``, in that order."""
        order = list(order)
        if len(order) < 2:
            return Rows(self.cls, [[column[i] for i in order] for column in self.columns])
        pick = operator.itemgetter(*order)
        return Rows(self.cls, [list(pick(column)) for column in self.columns])

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self._build(zip(*(column[index] for column in self.columns))))
        return next(self._build([tuple(column[index] for column in self.columns)]))

    def __iter__(self) -> typing.Iterator:
        return self._build(zip(*self.columns))

    def _build(self, rows: typing.Iterable[tuple]) -> typing.Iterator:
        # A frozen dataclass's __init__ sets each field through
        # object.__setattr__; filling the instance dict takes half the time.
        cls, names, new = self.cls, self.names, object.__new__
        for row in rows:
            instance = new(cls)
            instance.__dict__.update(zip(names, row))
            yield instance

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rows):
            return self.cls is other.cls and self.columns == other.columns
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Rows({self.cls.__name__}, {len(self)} rows)"


def column(rows: typing.Sequence, name: str) -> typing.Sequence:
    """Field ``name`` of every row: read from the columns when ``rows`` is :class:`Rows`."""
    return rows.column(name) if isinstance(rows, Rows) else [getattr(row, name) for row in rows]


@dataclass(frozen=True)
class Deferral:
    key: str
    campaign: str
    customer_id: int
    channel: str
    until: datetime
    rule: str  # quiet_hours | send_window


@dataclass(frozen=True)
class HeldBack:
    campaign: str
    rule: str  # suppressed_inactive | unsubscribed | address_invalid | no_consent | no_contact | frequency_cap | budget
    count: int


@dataclass(frozen=True)
class ForecastCell:
    day: date  # in the project's time zone
    channel: str
    messages: int
    cost: float


@dataclass(frozen=True)
class OfferForecast:
    """The economics of one campaign (and arm) with an offer: audience x
    conversion x check against the offer's cost and the messages (docs/plan.md,
    "Offer forecast"). Money is rounded to 2 places, shares to 6, DRR to 4."""

    campaign: str
    arm: str | None
    offer: str
    offer_kind: str  # fixed_discount | percent_discount | basket_discount | bonus_points | cashback | gift
    limit_kind: str  # discount | bonus: which drr_limits entry applies
    terms: str  # the offer in a few words: "250 off from 2,000"
    lookback_days: float  # history read for conversion, check and items
    window_days: float  # conversion = share of customers ordering within a window this long
    audience: int  # treated customers who would be messaged (not held out, not in control, not suppressed)
    reached: int  # of them, reachable by at least one step
    conversion: float  # share of the reached expected to buy
    conversion_from: str  # history | offer | campaign: where the conversion came from
    average_check: float  # the audience's average check in the look-back (or the override)
    check: float  # the check a buyer is expected to make (raised to the threshold)
    items: float  # items in it
    threshold: float | None  # min_check of the offer
    amount: float  # incentive per buyer
    redemption_rate: float  # share of buyers' incentive expected to be used
    buyers: float  # reached x conversion
    revenue: float  # buyers x check
    incentive_cost: float  # buyers x amount x redemption_rate
    message_cost: float  # every step x its channel's cost x the customers it reaches
    cost: float  # incentive_cost + message_cost
    drr: float | None  # cost / revenue (None without revenue)
    limit: float  # policies.drr_limits[limit_kind]
    payback: float | None  # revenue / cost (None without cost)

    @property
    def over_limit(self) -> bool:
        return (self.drr is not None and self.drr > self.limit) or (self.drr is None and self.cost > 0)


@dataclass(frozen=True)
class Violation:
    rule: str  # budget | monthly_budget | broadcast_missed | missing_definition | missing_facts | sms_parts | template
    campaign: str | None
    message: str
    numbers: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Plan:
    format_version: int
    project: str
    currency: str
    timezone: str
    now: datetime
    state_fingerprint: str
    campaign_changes: tuple[CampaignChange, ...] = ()
    audiences: tuple[CampaignAudience, ...] = ()
    enrollments: typing.Sequence[EnrollmentAction] = ()  # Rows from the planner, a tuple from JSON
    messages: typing.Sequence[MessageAction] = ()
    deferred: tuple[Deferral, ...] = ()
    held_back: tuple[HeldBack, ...] = ()
    forecast: tuple[ForecastCell, ...] = ()
    violations: tuple[Violation, ...] = ()
    sms_templates: tuple[SmsEstimate, ...] = ()  # parts per SMS template a campaign uses (cost = parts x channel cost)
    offer_forecast: tuple[OfferForecast, ...] = ()  # per campaign (and arm) with an offer: revenue, cost, DRR

    # -- summaries the renderers and the CLI share

    def changes(self, action: str) -> tuple[CampaignChange, ...]:
        return tuple(change for change in self.campaign_changes if change.action == action)

    @property
    def messages_cost(self) -> float:
        return round(sum(column(self.messages, "cost")), 6)

    def messages_by_channel(self) -> dict[str, tuple[int, float]]:
        """channel -> (messages now, their cost), by channel name."""
        return _totals(column(self.messages, "channel"), column(self.messages, "cost"))

    def messages_by_campaign(self) -> dict[str, dict[str, tuple[int, float]]]:
        """campaign -> channel -> (messages now, their cost), by name."""
        by_campaign: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
        pairs = list(zip(column(self.messages, "campaign"), column(self.messages, "channel")))
        for (campaign, channel), totals in _totals(pairs, column(self.messages, "cost")).items():
            by_campaign[campaign][channel] = totals
        return dict(by_campaign)

    def entering(self) -> int:
        return column(self.enrollments, "action").count(ENTER)

    @property
    def has_changes(self) -> bool:
        """What `plan --detailed-exitcode` reports as 2: something would be written or sent."""
        return bool(self.enrollments or self.messages or any(c.action != UNCHANGED for c in self.campaign_changes))

    def exit_code(self) -> int:
        """Terraform's -detailed-exitcode: 1 violations, 2 changes, 0 nothing to do."""
        return 1 if self.violations else 2 if self.has_changes else 0

    # -- JSON

    def to_dict(self) -> dict[str, Any]:
        return _encode(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported plan format_version {data.get('format_version')!r}; this campaignctl reads {FORMAT_VERSION}")
        return _decode(cls, data)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.from_dict(json.loads(text))


def _totals(keys: typing.Sequence, costs: typing.Sequence[float]) -> dict:
    """key -> (count, summed cost), by key."""
    totals: dict = defaultdict(lambda: [0, 0.0])
    for key, cost in zip(keys, costs):
        totals[key][0] += 1
        totals[key][1] += cost
    return {key: (count, round(cost, 6)) for key, (count, cost) in sorted(totals.items())}


# --------------------------------------------------------------------------- encoding


def _encode(value: Any) -> Any:
    if isinstance(value, Rows):  # a column at a time: one type check per column, not per value
        encoded = [[_encode(item) for item in values] if _needs_encoding(values) else values for values in value.columns]
        return [dict(zip(value.names, row)) for row in zip(*encoded)]
    if is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def _needs_encoding(values: list) -> bool:
    return any(value is not None and not isinstance(value, (str, int, float)) for value in values)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in fields(cls))


def _decode(tp: Any, value: Any) -> Any:
    """``value`` (from JSON) as type ``tp``: dataclasses, tuples, mappings, dates, optionals."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return _decode(options[0], value)
    if is_dataclass(tp):
        return tp(**{name: _decode(hint, value[name]) for name, hint in _hints(tp) if name in value})
    if origin is abc.Sequence:
        return tuple(_decode(typing.get_args(tp)[0], item) for item in value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in value)
        return tuple(_decode(arg, item) for arg, item in zip(args, value))
    if origin in (abc.Mapping, dict):
        key_type, value_type = typing.get_args(tp) or (str, Any)
        return MappingProxyType({key: _decode(value_type, item) for key, item in value.items()})
    if tp is datetime:
        return datetime.fromisoformat(value)
    if tp is date:
        return date.fromisoformat(value)
    if tp is float:
        return float(value)
    if tp is int:
        return int(value)
    return value
