"""What an offer costs per buyer, from its terms and the check a buyer is expected to make.

All arithmetic is exact (:class:`~fractions.Fraction`: a forecast is matched
to the kopeck, and binary floats, or Decimals dividing by 3, would drift in
the last digit). Nothing is rounded here; :func:`half_up` rounds once, on
output (docs/plan.md, "Offer forecast").

The model, per buyer (a customer of the audience who orders in the window):

- the check is the segment's average check, raised to the offer's `min_check`
  (a buyer who uses the offer has reached its threshold);
- fixed_discount: `amount`; percent_discount: `percent` of the check, at most
  `max_amount`; basket_discount: the items are the segment's average, raised to
  the lowest tier, the check grows with them at the same price per item, and
  the highest tier reached gives its percent of that check;
- bonus_points: `points` (at most `max_per_customer`); cashback: `percent` of
  the check in points (at most `max_per_customer`). Points cost when spent, and
  a check like the expected one takes at most `max_share_of_check` of them;
- gift: its `cost`.

Discount kinds and gifts count against ``drr_limits.discount``; points and
cashback against ``drr_limits.bonus``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any, Mapping

DISCOUNT, BONUS = "discount", "bonus"
LIMIT_KIND: Mapping[str, str] = {
    "fixed_discount": DISCOUNT,
    "percent_discount": DISCOUNT,
    "basket_discount": DISCOUNT,
    "gift": DISCOUNT,
    "bonus_points": BONUS,
    "cashback": BONUS,
}
HUNDRED = Fraction(100)
ZERO = Fraction(0)


def money(value: Any) -> Fraction:
    """A YAML number as an exact fraction (floats by their shortest repr: 0.2 is 1/5)."""
    return Fraction(str(value))


def half_up(value: Fraction, places: int = 2) -> Decimal:
    """``value`` rounded half away from zero to ``places`` decimals, exactly."""
    scaled = abs(value) * 10**places
    rounded = math.floor(scaled + Fraction(1, 2))
    sign = -1 if value < 0 else 1
    return (Decimal(sign * rounded) / Decimal(10**places)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


@dataclass(frozen=True)
class BuyerValue:
    """One buyer, as the forecast expects them under an offer."""

    check: Fraction  # the check they make (before the discount)
    items: Fraction  # items in it
    incentive: Fraction  # what the offer gives them, in money (points at 1 point = 1 unit of currency)


def limit_kind(offer_kind: str) -> str:
    return LIMIT_KIND[offer_kind]


def buyer_value(spec: Mapping[str, Any], average_check: Fraction, average_items: Fraction) -> BuyerValue:
    """The check, items and incentive of one buyer of an offer with terms ``spec``,
    given the audience's average check and items per check."""
    check = max(average_check, money(spec.get("min_check", 0)))
    items = average_items
    kind = spec["kind"]
    if kind == "basket_discount":
        return _basket(spec, check, items)
    if kind == "fixed_discount":
        incentive = min(money(spec["amount"]), check)
    elif kind == "percent_discount":
        incentive = check * money(spec["percent"]) / HUNDRED
        if spec.get("max_amount") is not None:
            incentive = min(incentive, money(spec["max_amount"]))
    elif kind == "bonus_points":
        incentive = _spendable(spec, money(spec["points"]), check)
    elif kind == "cashback":
        incentive = _spendable(spec, check * money(spec["percent"]) / HUNDRED, check)
    elif kind == "gift":
        incentive = money(spec.get("cost", 0))
    else:
        raise ValueError(f"unknown offer kind {kind!r}")
    return BuyerValue(check, items, incentive)


def _spendable(spec: Mapping[str, Any], points: Fraction, check: Fraction) -> Fraction:
    if spec.get("max_per_customer") is not None:
        points = min(points, money(spec["max_per_customer"]))
    if spec.get("max_share_of_check") is not None:
        points = min(points, check * money(spec["max_share_of_check"]))
    return points


def _basket(spec: Mapping[str, Any], check: Fraction, items: Fraction) -> BuyerValue:
    tiers = sorted((int(tier["items"]), money(tier["percent"])) for tier in spec["tiers"])
    stretched = max(items, Fraction(tiers[0][0]))
    if items > 0:
        check = check * stretched / items  # more items at the same price per item
    percent = max(percent for needed, percent in tiers if needed <= stretched)
    return BuyerValue(check, stretched, check * percent / HUNDRED)


def threshold(spec: Mapping[str, Any]) -> Fraction | None:
    """The check the offer needs, when it names one."""
    return money(spec["min_check"]) if spec.get("min_check") is not None else None


def describe_terms(spec: Mapping[str, Any]) -> str:
    """The offer in a few words, for tables: "250 off from 2,000", "10/15/20% for 3/4/5 items"."""
    kind = spec["kind"]
    start = f" from {_number(spec['min_check'])}" if spec.get("min_check") is not None else ""
    if kind == "fixed_discount":
        return f"{_number(spec['amount'])} off{start}"
    if kind == "percent_discount":
        cap = f" (at most {_number(spec['max_amount'])})" if spec.get("max_amount") is not None else ""
        return f"{_number(spec['percent'])}% off{start}{cap}"
    if kind == "basket_discount":
        tiers = sorted((int(t["items"]), t["percent"]) for t in spec["tiers"])
        return f"{'/'.join(_number(p) for _, p in tiers)}% for {'/'.join(str(n) for n, _ in tiers)} items"
    if kind == "bonus_points":
        return f"{_number(spec['points'])} points{start}"
    if kind == "cashback":
        return f"{_number(spec['percent'])}% back in points{start}"
    return f"gift{start}"


def _number(value: Any) -> str:
    number = Decimal(str(value))
    return f"{number:,.0f}" if number == number.to_integral_value() else f"{number:,}"


def validity_days(spec: Mapping[str, Any]) -> int | None:
    """How many days the offer can be used: ``valid.days``, or the from/to span (inclusive)."""
    valid = spec.get("valid") or {}
    if valid.get("days") is not None:
        return int(valid["days"])
    if valid.get("from") and valid.get("to"):
        return (date.fromisoformat(str(valid["to"])) - date.fromisoformat(str(valid["from"]))).days + 1
    return None
