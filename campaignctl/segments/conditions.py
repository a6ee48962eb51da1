"""Segment conditions as typed data, and the checks the JSON Schema cannot state.

Parsing turns a located ``where`` mapping into frozen nodes; every problem
(unknown reference, two comparison operators, ``of`` missing for ``sum``, a
filter the table does not support ...) becomes a Diagnostic pointing at the
offending key, and parsing carries on so that all of them are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from ..diagnostics import Diagnostic
from ..loader import locate
from .periods import parse_duration, period_window

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "between", "is_null")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONSENT_CHANNELS = ("email", "sms", "push", "web_push", "whatsapp", "telegram")
AGGREGATE_TABLES = ("orders", "order_lines", "events")

# Columns `of` may name, per table: numbers for sum/avg/min/max, anything for distinct.
NUMERIC_COLUMNS = {
    "orders": ("total", "discount", "bonus_spent", "items"),
    "order_lines": ("qty", "price", "amount"),
    "events": (),
}
DISTINCT_COLUMNS = {
    "orders": NUMERIC_COLUMNS["orders"] + ("store_id", "channel", "promo_code"),
    "order_lines": NUMERIC_COLUMNS["order_lines"] + ("order_id", "product_id", "category"),
    "events": ("type", "product_id", "category"),
}
ORDER_FILTERS = ("period", "channel", "weekday", "store", "mall", "city", "category", "product", "status")
FILTERS = {"orders": ORDER_FILTERS, "order_lines": ORDER_FILTERS, "events": ("period", "weekday", "category", "product", "type")}
METRICS_WITH_OF = {"sum": NUMERIC_COLUMNS, "avg": NUMERIC_COLUMNS, "min": NUMERIC_COLUMNS, "max": NUMERIC_COLUMNS, "distinct": DISTINCT_COLUMNS}
METRICS_WITHOUT_OF = ("count", "days_since_last", "days_since_first", "distinct_days")
# Metrics that count things are 0 for a customer without rows; the rest are null.
ZERO_WHEN_EMPTY = ("count", "sum", "distinct", "distinct_days")


@dataclass(frozen=True)
class Comparison:
    op: str
    value: Any  # a tuple for in / not_in / between


@dataclass(frozen=True)
class Aggregate:
    """One per-customer aggregate; equal aggregates are computed once."""

    table: str
    metric: str
    of: str | None
    filters: tuple[tuple[str, Any], ...]  # sorted (name, normalised value)

    def filter(self, name: str) -> Any:
        return dict(self.filters).get(name)


@dataclass(frozen=True)
class Node:
    path: tuple = field(compare=False)  # inside the segment's spec, for messages and explain


@dataclass(frozen=True)
class AllOf(Node):
    items: tuple[Node, ...] = ()


@dataclass(frozen=True)
class AnyOf(Node):
    items: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Not(Node):
    item: Node | None = None


@dataclass(frozen=True)
class SegmentRef(Node):
    name: str = ""


@dataclass(frozen=True)
class CustomerField(Node):
    field_name: str = ""
    comparison: Comparison | None = None


@dataclass(frozen=True)
class AggregateCompare(Node):
    aggregate: Aggregate | None = None
    comparison: Comparison | None = None


@dataclass(frozen=True)
class FeatureCompare(Node):
    feature: str = ""
    part: str = ""  # "" for the feature's main value, "r" for rfm.r ...
    comparison: Comparison | None = None


@dataclass(frozen=True)
class Abandoned(Node):
    events: tuple[str, ...] = ()
    after: timedelta = timedelta(0)
    within: timedelta = timedelta(0)
    unless: tuple[str, ...] = ("order",)  # "order" or event types


@dataclass(frozen=True)
class PriceDropInCart(Node):
    within: timedelta = timedelta(0)
    cart_within: timedelta = timedelta(0)


@dataclass(frozen=True)
class Birthday(Node):
    within_days: int = 0


@dataclass(frozen=True)
class Consent(Node):
    channel: str = ""
    require_contact: bool = False  # `reachable`: consent and a contact to send to


@dataclass(frozen=True)
class Sample(Node):
    percent: float = 0.0
    salt: str = ""


class Problems:
    """Collects diagnostics for one definition, located inside its spec."""

    def __init__(self, spec: Mapping[str, Any], subject: str, sink: list[Diagnostic]):
        self.spec, self.subject, self.sink = spec, subject, sink

    def add(self, path: tuple, message: str, hint: str = "", *, key: bool = False) -> None:
        where = locate(self.spec, path, key=key) or getattr(self.spec, "mark", None)
        self.sink.append(Diagnostic(where, self.subject + _render_path(path), message, hint))


def _render_path(path: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _names(value: Any) -> tuple:
    """A filter value written as one item or a list, as a sorted tuple."""
    items = value if isinstance(value, list) else [value]
    return tuple(sorted(items, key=lambda item: (str(type(item)), item)))


def parse_comparison(node: Mapping[str, Any], own_keys: tuple[str, ...], path: tuple, problems: Problems) -> Comparison | None:
    """The single comparison operator of ``node``; ``own_keys`` are the node's other keys."""
    operators = [key for key in node if key in OPERATORS]
    for key in node:
        if key not in OPERATORS and key not in own_keys:
            problems.add(path + (key,), f"unknown key {key!r}", f"use one of: {', '.join(own_keys + OPERATORS)}", key=True)
    if len(operators) != 1:
        message = "a comparison operator is missing" if not operators else f"more than one comparison operator: {', '.join(operators)}"
        problems.add(path, message, f"use exactly one of: {', '.join(OPERATORS)}")
        return None
    op = operators[0]
    value = node[op]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            problems.add(path + (op,), f"{op} takes a non-empty list", f"write {op}: [a, b]")
            return None
        return Comparison(op, tuple(value))
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            problems.add(path + (op,), "between takes [low, high]", "write between: [10, 20]")
            return None
        try:
            if value[0] > value[1]:
                problems.add(path + (op,), f"between has low {value[0]!r} above high {value[1]!r}", "swap the bounds")
        except TypeError:
            problems.add(path + (op,), "between bounds must be of the same type", "write two numbers or two dates")
        return Comparison(op, tuple(value))
    if op == "is_null":
        if not isinstance(value, bool):
            problems.add(path + (op,), "is_null takes true or false")
            return None
        return Comparison(op, value)
    if isinstance(value, (list, dict)) or value is None:
        problems.add(path + (op,), f"{op} takes a single value", "use in/not_in for lists, is_null for nulls")
        return None
    return Comparison(op, value)


def parse_aggregate(table: str, spec: Any, path: tuple, problems: Problems, *, compared: bool) -> tuple[Aggregate | None, Comparison | None]:
    """An aggregate of ``table`` and, when ``compared``, its comparison."""
    if not isinstance(spec, Mapping):
        problems.add(path, f"{table} takes a mapping with metric, filters and a comparison")
        return None, None
    own_keys = ("metric", "of") + FILTERS[table]
    comparison = parse_comparison(spec, own_keys, path, problems) if compared else None
    if not compared:
        for key in spec:
            if key not in own_keys:
                problems.add(path + (key,), f"unknown key {key!r} in a value", f"use: {', '.join(own_keys)}", key=True)
    metric, of = spec.get("metric"), spec.get("of")
    ok = _check_metric(table, metric, of, path, problems)
    filters = []
    for name in FILTERS[table]:
        if name in spec:
            value = _parse_filter(table, name, spec[name], path + (name,), problems)
            ok = ok and value is not None
            filters.append((name, value))
    if table != "events" and "status" not in spec:
        filters.append(("status", ("completed",)))
    if not ok:
        return None, comparison
    return Aggregate(table, metric, of, tuple(sorted(filters))), comparison


def _check_metric(table: str, metric: Any, of: Any, path: tuple, problems: Problems) -> bool:
    if metric in METRICS_WITHOUT_OF:
        if of is not None:
            problems.add(path + ("of",), f"metric {metric} takes no 'of'", "remove 'of'", key=True)
            return False
        return True
    if metric not in METRICS_WITH_OF:
        problems.add(path + ("metric",), f"unknown metric {metric!r}", f"use one of: {', '.join(METRICS_WITHOUT_OF + tuple(METRICS_WITH_OF))}")
        return False
    allowed = METRICS_WITH_OF[metric][table]
    if of is None:
        hint = f"add of: one of {', '.join(allowed)}" if allowed else f"{table} has no column to {metric}; use count"
        problems.add(path + ("metric",), f"metric {metric} needs 'of' (the column to {metric})", hint)
        return False
    if of not in allowed:
        hint = f"{table} columns for {metric}: {', '.join(allowed)}" if allowed else f"{table} has no column to {metric}; use count"
        problems.add(path + ("of",), f"{table} has no column {of!r} for {metric}", hint)
        return False
    return True


def _parse_filter(table: str, name: str, value: Any, path: tuple, problems: Problems) -> Any:
    if name == "period":
        return parse_period(value, path, problems)
    if name == "weekday":
        days = _names(value)
        unknown = [day for day in days if day not in WEEKDAYS]
        if unknown:
            problems.add(path, f"unknown weekday {unknown[0]!r}", f"use {', '.join(WEEKDAYS)}")
            return None
        return tuple(sorted(days, key=WEEKDAYS.index))
    if name == "status" and not value:
        problems.add(path, "status needs at least one status", "e.g. status: [completed, returned]")
        return None
    return _names(value)


def parse_period(value: Any, path: tuple, problems: Problems) -> tuple | None:
    if not isinstance(value, Mapping) or len(value) != 1 and set(value) != {"from", "to"}:
        problems.add(path, "a period has one of: last, ago, calendar, or from/to", "e.g. period: {last: 365d}")
        return None
    try:
        period_window(dict(value), datetime(2000, 1, 1))
    except (ValueError, TypeError) as exc:
        problems.add(path, f"bad period: {exc}", "e.g. period: {last: 365d} or {from: 2026-01-01, to: 2026-03-31}")
        return None
    return tuple(sorted((key, tuple(item) if isinstance(item, list) else item) for key, item in value.items()))


def period_spec(period: tuple) -> dict:
    """The period filter back as the mapping period_window reads."""
    return {key: list(item) if isinstance(item, tuple) else item for key, item in period}


def _duration(value: Any, path: tuple, problems: Problems) -> timedelta | None:
    try:
        return parse_duration(value)
    except ValueError as exc:
        problems.add(path, str(exc))
        return None


class ConditionParser:
    """Parses the ``where`` of one segment. ``features`` maps feature names to
    the parts their values have (rfm -> {"", "r", "f", ...})."""

    def __init__(self, problems: Problems, segments: Mapping[str, Any], features: Mapping[str, frozenset[str]], customer_fields: tuple[str, ...]):
        self.problems = problems
        self.segments = segments
        self.features = features
        self.customer_fields = customer_fields
        self.handlers: dict[str, Callable[[Any, tuple], Node | None]] = {
            "all": self._all,
            "any": self._any,
            "not": self._not,
            "segment": self._segment,
            "customer": self._customer,
            "orders": self._aggregate,
            "order_lines": self._aggregate,
            "events": self._aggregate,
            "feature": self._feature,
            "abandoned": self._abandoned,
            "price_drop_in_cart": self._price_drop,
            "birthday": self._birthday,
            "consent": self._consent,
            "reachable": self._consent,
            "sample": self._sample,
        }

    def parse(self, spec: Any, path: tuple) -> Node | None:
        if not isinstance(spec, Mapping) or len(spec) != 1:
            self.problems.add(path, "a condition is a mapping with exactly one key", f"use one of: {', '.join(self.handlers)}")
            return None
        (key, value), = spec.items()
        handler = self.handlers.get(key)
        if handler is None:
            self.problems.add(path + (key,), f"unknown condition {key!r}", f"use one of: {', '.join(self.handlers)}", key=True)
            return None
        return handler(value, path + (key,))

    def _items(self, value: Any, path: tuple) -> tuple[Node, ...] | None:
        if not isinstance(value, list) or not value:
            self.problems.add(path, "takes a non-empty list of conditions")
            return None
        items = [self.parse(item, path + (index,)) for index, item in enumerate(value)]
        return None if any(item is None for item in items) else tuple(items)

    def _all(self, value: Any, path: tuple) -> Node | None:
        items = self._items(value, path)
        return AllOf(path, items) if items else None

    def _any(self, value: Any, path: tuple) -> Node | None:
        items = self._items(value, path)
        return AnyOf(path, items) if items else None

    def _not(self, value: Any, path: tuple) -> Node | None:
        item = self.parse(value, path)
        return Not(path, item) if item else None

    def _segment(self, value: Any, path: tuple) -> Node | None:
        if value not in self.segments:
            self.problems.add(path, f"unknown segment {value!r}", f"defined segments: {', '.join(sorted(self.segments)) or 'none'}")
            return None
        return SegmentRef(path, value)

    def _customer(self, value: Any, path: tuple) -> Node | None:
        if not isinstance(value, Mapping):
            self.problems.add(path, "customer takes {field, <operator>}")
            return None
        comparison = parse_comparison(value, ("field",), path, self.problems)
        field_name = value.get("field")
        if field_name not in self.customer_fields:
            self.problems.add(path + ("field",), f"customers have no field {field_name!r}", f"fields: {', '.join(self.customer_fields)}")
            return None
        return CustomerField(path, field_name, comparison) if comparison else None

    def _aggregate(self, value: Any, path: tuple) -> Node | None:
        aggregate, comparison = parse_aggregate(path[-1], value, path, self.problems, compared=True)
        return AggregateCompare(path, aggregate, comparison) if aggregate and comparison else None

    def _feature(self, value: Any, path: tuple) -> Node | None:
        if not isinstance(value, Mapping):
            self.problems.add(path, "feature takes {name, <operator>}")
            return None
        comparison = parse_comparison(value, ("name",), path, self.problems)
        name, _, part = str(value.get("name")).partition(".")
        if name not in self.features:
            self.problems.add(path + ("name",), f"unknown feature {name!r}", f"defined features: {', '.join(sorted(self.features)) or 'none'}")
            return None
        if part not in self.features[name]:
            parts = sorted(f"{name}.{known}" for known in self.features[name] if known)
            self.problems.add(path + ("name",), f"feature {name} has no part {part!r}", f"use {name}" + (f" or {', '.join(parts)}" if parts else ""))
            return None
        return FeatureCompare(path, name, part, comparison) if comparison else None

    def _abandoned(self, value: Any, path: tuple) -> Node | None:
        if not isinstance(value, Mapping) or "event" not in value or "within" not in value:
            self.problems.add(path, "abandoned takes {event, within, after, unless}", "e.g. {event: cart_updated, after: 1h, within: 7d}")
            return None
        after = _duration(value.get("after", "0"), path + ("after",), self.problems)
        within = _duration(value["within"], path + ("within",), self.problems)
        if after is None or within is None:
            return None
        if after >= within:
            self.problems.add(path + ("after",), "after must be shorter than within", "the event happened between `within` ago and `after` ago")
            return None
        unless = _names(value.get("unless", ["order"]))
        return Abandoned(path, _names(value["event"]), after, within, unless)

    def _price_drop(self, value: Any, path: tuple) -> Node | None:
        if not isinstance(value, Mapping):
            self.problems.add(path, "price_drop_in_cart takes {within, cart_within}")
            return None
        within = _duration(value.get("within", "7d"), path + ("within",), self.problems)
        cart_within = _duration(value.get("cart_within", "30d"), path + ("cart_within",), self.problems)
        return PriceDropInCart(path, within, cart_within) if within and cart_within else None

    def _birthday(self, value: Any, path: tuple) -> Node | None:
        days = value.get("within_days") if isinstance(value, Mapping) else None
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            self.problems.add(path, "birthday takes {within_days: N} with N >= 0")
            return None
        return Birthday(path, days)

    def _consent(self, value: Any, path: tuple) -> Node | None:
        if value not in CONSENT_CHANNELS:
            self.problems.add(path, f"{value!r} is not a channel kind with consents", f"use one of: {', '.join(CONSENT_CHANNELS)}")
            return None
        return Consent(path, value, require_contact=path[-1] == "reachable")

    def _sample(self, value: Any, path: tuple) -> Node | None:
        percent = value.get("percent") if isinstance(value, Mapping) else None
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            self.problems.add(path, "sample takes {percent: 0..100, salt: text}")
            return None
        return Sample(path, float(percent), str(value.get("salt", "")))


def walk(node: Node) -> list[Node]:
    """``node`` and every node below it, depth first (segment references not expanded)."""
    children: tuple[Node, ...] = ()
    if isinstance(node, (AllOf, AnyOf)):
        children = node.items
    elif isinstance(node, Not) and node.item is not None:
        children = (node.item,)
    return [node] + [below for child in children for below in walk(child)]
