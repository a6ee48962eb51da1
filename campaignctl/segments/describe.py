"""Conditions in words, for `segment explain` and `segment show`."""

from __future__ import annotations

from datetime import timedelta

from .conditions import (
    Abandoned,
    Aggregate,
    AggregateCompare,
    AllOf,
    AnyOf,
    Birthday,
    Comparison,
    Consent,
    CustomerField,
    FeatureCompare,
    Node,
    Not,
    PriceDropInCart,
    Sample,
    SegmentRef,
    period_spec,
)

_OPERATOR_WORDS = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "in": "in", "not_in": "not in", "between": "between"}


def describe(node: Node) -> str:
    """One line for ``node`` (its children are described on their own lines)."""
    if isinstance(node, AllOf):
        return "all of"
    if isinstance(node, AnyOf):
        return "any of"
    if isinstance(node, Not):
        return "not"
    if isinstance(node, SegmentRef):
        return f"in segment {node.name}"
    if isinstance(node, CustomerField):
        return f"customer {node.field_name} {describe_comparison(node.comparison)}"
    if isinstance(node, AggregateCompare):
        return f"{describe_aggregate(node.aggregate)} {describe_comparison(node.comparison)}"
    if isinstance(node, FeatureCompare):
        name = f"{node.feature}.{node.part}" if node.part else node.feature
        return f"feature {name} {describe_comparison(node.comparison)}"
    if isinstance(node, Abandoned):
        unless = " or ".join(node.unless)
        return f"last {' or '.join(node.events)} between {_duration(node.within)} and {_duration(node.after)} ago, no {unless} since"
    if isinstance(node, PriceDropInCart):
        return f"price dropped within {_duration(node.within)} on a product put in the cart within {_duration(node.cart_within)}, not ordered since"
    if isinstance(node, Birthday):
        return f"birthday today or within {node.within_days} days"
    if isinstance(node, Consent):
        return f"reachable by {node.channel} (consent and contact)" if node.require_contact else f"latest {node.channel} consent granted"
    if isinstance(node, Sample):
        return f"{node.percent:g}% hash sample (salt {node.salt!r})"
    raise TypeError(f"no description for {type(node).__name__}")


def describe_comparison(comparison: Comparison) -> str:
    if comparison.op == "is_null":
        return "is null" if comparison.value else "is not null"
    value = comparison.value
    if comparison.op == "between":
        return f"between {value[0]} and {value[1]}"
    if isinstance(value, tuple):
        return f"{_OPERATOR_WORDS[comparison.op]} [{', '.join(map(str, value))}]"
    return f"{_OPERATOR_WORDS[comparison.op]} {value}"


def describe_aggregate(aggregate: Aggregate) -> str:
    what = aggregate.metric.replace("_", " ") + (f" {aggregate.of}" if aggregate.of else "")
    filters = []
    for name, value in aggregate.filters:
        if name == "period":
            filters.append(" ".join(f"{key} {_text(item)}" for key, item in period_spec(value).items()))
        else:
            filters.append(f"{name} {_text(value)}")
    return f"{aggregate.table} {what}" + (f" ({', '.join(filters)})" if filters else "")


def _text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return str(value[0]) if len(value) == 1 else "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return "0"
