"""Redemptions read from the orders: what a report sets against the forecast.

An order redeems an offer when its ``orders.promo_code`` is one of the codes
issued for it (given by the caller, from the promo-code ledger) or, without
them, starts with the prefix of the offer's promo-code pool (``promo_pools``). Offers without codes
(bonus points, cashback) are redeemed by spending points: the orders of the
given customers with ``orders.bonus_spent > 0``. Completed orders only, with
``since <= ts < until``. One query for every offer asked about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Mapping, Sequence

from sqlglot import exp

from ..model import Project

if TYPE_CHECKING:
    from ..contracts import DataSource

UTC = timezone.utc


@dataclass(frozen=True)
class Redemption:
    offer: str
    matched_by: str  # codes | prefix | bonus_spent | none (nothing identifies its orders)
    orders: int
    customers: int
    revenue: float  # totals of the redeeming orders
    discount: float  # orders.discount on them
    bonus_spent: float  # orders.bonus_spent on them


def redemptions(project: Project, source: DataSource, offers: Sequence[str], since: datetime, until: datetime, *,
                codes: Mapping[str, Sequence[str]] | None = None, customers: Sequence[int] | None = None) -> dict[str, Redemption]:
    """Per offer name: the orders in [since, until) that redeemed it. ``codes``:
    offer -> the promo codes issued for it; ``customers``: whose point
    spending counts for offers without codes (a campaign's treated customers)."""
    unknown = [name for name in offers if name not in project.offers]
    if unknown:
        raise KeyError(f"unknown offer: {', '.join(unknown)}")
    orders = project.data_source.table("orders")
    present = {name.lower() for name in source.table_columns(orders.table) or ()}
    has_codes = orders.column("promo_code").lower() in present

    def col(logical: str) -> exp.Column:
        return exp.column(orders.column(logical), table="o", quoted=True)

    matches = {name: _match(project, name, col, has_codes, (codes or {}).get(name), customers) for name in offers}
    columns: list[exp.Expression] = [exp.alias_(exp.Literal.number(1), "one")]
    for i, name in enumerate(offers):
        condition = matches[name][1]

        def when(value: exp.Expression, condition: exp.Expression = condition) -> exp.Expression:
            return exp.Case(ifs=[exp.If(this=condition.copy(), true=value)])

        columns += [
            exp.alias_(exp.Count(this=when(exp.Literal.number(1))), f"orders_{i}", quoted=True),
            exp.alias_(exp.Count(this=exp.Distinct(expressions=[when(col("customer_id"))])), f"customers_{i}", quoted=True),
            exp.alias_(exp.Sum(this=when(col("total"))), f"revenue_{i}", quoted=True),
            exp.alias_(exp.Sum(this=when(col("discount"))), f"discount_{i}", quoted=True),
            exp.alias_(exp.Sum(this=when(col("bonus_spent"))), f"bonus_{i}", quoted=True),
        ]
    query = exp.select(*columns).from_(exp.to_table(orders.table, alias="o")).where(exp.and_(
        exp.EQ(this=col("status"), expression=exp.Literal.string("completed")),
        exp.GTE(this=col("ts"), expression=_timestamp(since)),
        exp.LT(this=col("ts"), expression=_timestamp(until)),
    ))
    row = source.query(query.sql(dialect=source.dialect)).to_pylist()[0]
    return {
        name: Redemption(name, matches[name][0], int(row[f"orders_{i}"] or 0), int(row[f"customers_{i}"] or 0),
                         round(float(row[f"revenue_{i}"] or 0), 2), round(float(row[f"discount_{i}"] or 0), 2),
                         round(float(row[f"bonus_{i}"] or 0), 2))
        for i, name in enumerate(offers)
    }


def _match(project: Project, name: str, col, has_codes: bool, issued: Sequence[str] | None,
           customers: Sequence[int] | None) -> tuple[str, exp.Expression]:
    spec = project.offers[name].spec
    if spec.get("promo_codes") or issued:
        if not has_codes:
            return "none", exp.false()
        if issued:
            return "codes", exp.In(this=col("promo_code"), expressions=[exp.Literal.string(str(code)) for code in issued])
        prefix = _prefix(project, spec.get("promo_codes") or {})
        if prefix:
            return "prefix", exp.Like(this=col("promo_code"), expression=exp.Literal.string(prefix.replace("%", "") + "%"))
        return "none", exp.false()
    if customers:
        return "bonus_spent", exp.and_(exp.GT(this=col("bonus_spent"), expression=exp.Literal.number(0)),
                                       exp.In(this=col("customer_id"), expressions=[exp.Literal.number(int(c)) for c in customers]))
    return "none", exp.false()


def _prefix(project: Project, promo_codes) -> str:
    """What every code of the offer's pool starts with ("" when codes are imported or unprefixed)."""
    pool = (getattr(project, "promo_pools", None) or {}).get(promo_codes.get("pool"))
    return (pool.prefix if pool is not None else promo_codes.get("prefix")) or ""


def _timestamp(value: datetime) -> exp.Expression:
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return exp.cast(exp.Literal.string(value.astimezone(UTC).isoformat(sep=" ")), "TIMESTAMPTZ")
