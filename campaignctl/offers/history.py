"""The order history a forecast starts from, read with one query per data source.

For every customer asked for, over a look-back ``L`` ending at ``now``:
orders, their total and items (completed orders only), and for each window
length ``W`` in how many of the ``floor(L / W)`` consecutive windows
``(now - (k+1)W, now - kW]`` they ordered at least once. A segment's
conversion over windows like the offer's is then
``sum(windows with an order) / (customers x windows)``: the chance that one of
them orders within such a window, from their own past.

The query is built with sqlglot against the logical data contract and the
project's table/column mapping, and rendered in the source's dialect, like
campaignctl.facts. The per-segment sums are :func:`segment_history`, a pure
function the planner calls with the ids of each campaign's audience.

The windows a customer ordered in are not counted in the query with
``COUNT(DISTINCT window)``, a set of values per customer and spec that took
nine tenths of the query's time (DuckDB, 1M customers). The engine returns them
as a bitmap instead, bit ``k`` set when the customer ordered in window ``k``:
``BIT_OR`` of ``1 << k`` in BIGINT words of up to 63 windows each (bit 63 is
the sign bit, never shifted into), and the bits are counted here, per
customer, after the query. The aggregation stays in the engine, so a remote
source still sends one row per customer.

A spec whose window is a whole number ``m`` of another's, and whose windows
that one's cover, has no bitmap of its own: its window ``k`` is that one's
windows ``km .. km+m-1``, so its count is of the groups of ``m`` bits with one
set (14-day windows from 7-day ones, 12-day from 3- or 4-day ones). Words
then hold a multiple of every ``m`` (56 windows for groups of 2 and 7), so no
group spans two words. Each bitmap left out is one ``BIT_OR`` and one window
index per order less: two of the example project's five, ~15% of the query's
CPU at 1M customers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from functools import cached_property
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pyarrow
import pyarrow.compute as pc
from sqlglot import exp

from ..arrays import IdIndex, distinct_ids, locate, sorted_unique
from ..model import Project
from ..segments.compiler import epoch_micros, in_ids

if TYPE_CHECKING:
    from ..contracts import DataSource

UTC = timezone.utc
IN_LIST_LIMIT = 2000  # as campaignctl.facts: past this many ids, read everyone and keep the wanted rows here
WORD_BITS = 63  # at most, windows per BIGINT word of a bitmap: 1 << 63 would overflow a signed BIGINT (DuckDB raises)


@dataclass(frozen=True, order=True)
class HistorySpec:
    """How far back to look and the window a conversion is counted in."""

    lookback: timedelta
    window: timedelta

    @property
    def windows(self) -> int:
        return max(1, self.lookback // self.window)

    @property
    def key(self) -> str:
        return f"{int(self.lookback.total_seconds())}s/{int(self.window.total_seconds())}s"


@dataclass(frozen=True)
class CustomerHistory:
    """Per customer (sorted ids), the history under one spec; customers not
    listed have no completed order in the look-back."""

    spec: HistorySpec
    customer_ids: np.ndarray  # int64, sorted
    orders: np.ndarray  # int64
    revenue: np.ndarray  # float64: sum of order totals
    items: np.ndarray  # float64
    windows: np.ndarray  # int64: windows with an order
    shared_index: IdIndex | None = field(default=None, compare=False, repr=False)  # of customer_ids, built once for specs sharing them

    @classmethod
    def from_rows(cls, spec: HistorySpec, rows: Iterable[Mapping]) -> "CustomerHistory":
        """From dicts with customer_id, orders, revenue, items, windows (tests, other engines)."""
        rows = sorted(rows, key=lambda row: int(row["customer_id"]))
        return cls(
            spec,
            np.array([int(r["customer_id"]) for r in rows], dtype=np.int64),
            np.array([int(r.get("orders", 0)) for r in rows], dtype=np.int64),
            np.array([float(r.get("revenue", 0)) for r in rows], dtype=np.float64),
            np.array([float(r.get("items", 0)) for r in rows], dtype=np.float64),
            np.array([int(r.get("windows", 0)) for r in rows], dtype=np.int64),
        )

    @cached_property
    def index(self) -> IdIndex:
        """Customer id -> row, for the many audiences a plan sums over."""
        return self.shared_index if self.shared_index is not None else IdIndex(self.customer_ids)


@dataclass(frozen=True)
class SegmentHistory:
    """The sums over a set of customers; the rates are exact fractions of them."""

    customers: int
    orders: int
    revenue: Fraction  # exact to the kopeck (sums rounded to 2 places)
    items: Fraction
    windows: int  # (customer, window) pairs with an order
    windows_each: int  # windows per customer

    @property
    def conversion(self) -> Fraction:
        possible = self.customers * self.windows_each
        return Fraction(self.windows, possible) if possible else Fraction(0)

    @property
    def average_check(self) -> Fraction:
        return self.revenue / self.orders if self.orders else Fraction(0)

    @property
    def average_items(self) -> Fraction:
        return self.items / self.orders if self.orders else Fraction(0)


def segment_history(history: CustomerHistory, customer_ids: np.ndarray) -> SegmentHistory:
    """Sums of ``history`` over ``customer_ids`` (any order; each counted once)."""
    ids = sorted_unique(np.asarray(customer_ids, dtype=np.int64))
    rows = history.index.locate(ids)
    rows = rows[rows >= 0]
    return SegmentHistory(
        customers=int(len(ids)),
        orders=int(history.orders[rows].sum()),
        # Totals are in kopecks; a float64 sum of them is exact to far below a kopeck, so rounding restores it.
        revenue=Fraction(repr(round(float(history.revenue[rows].sum()), 2))),
        items=Fraction(repr(round(float(history.items[rows].sum()), 6))),
        windows=int(history.windows[rows].sum()),
        windows_each=history.spec.windows,
    )


# --------------------------------------------------------------------------- the bitmaps


@dataclass(frozen=True)
class Bitmap:
    """How a spec's windows with an order are counted: from the bitmap the query
    returns for ``base`` (itself, or a spec whose windows are ``per`` times
    shorter and reach as far), in words of ``bits`` windows."""

    base: HistorySpec
    per: int  # base windows per window of the spec
    bits: int  # base windows per BIGINT word

    @property
    def words(self) -> int:
        """BIGINT words the query's bitmap of ``base`` takes."""
        return -(-self.base.windows // self.bits)

    def count(self, words: Sequence[np.ndarray], windows: int) -> np.ndarray:
        """Per customer, the windows (of ``windows``, the spec's) with a set bit in
        their group of ``per`` bits, from the base's ``words`` (uint64, one array
        per word)."""
        counted = np.zeros(len(words[0]) if words else 0, dtype=np.int64)
        for w, word in enumerate(words):
            first = w * self.bits // self.per  # the spec's window at the word's bit 0
            groups = max(0, min(self.bits // self.per, windows - first))
            if not groups:
                continue
            seen = word
            for shift in range(1, self.per):  # bit i of a group's start: any of its bits set
                seen = seen | (word >> np.uint64(shift))
            mask = np.uint64(sum(1 << (group * self.per) for group in range(groups)))
            counted += np.bitwise_count(seen & mask)
        return counted


def bitmaps(specs: Iterable[HistorySpec]) -> dict[HistorySpec, Bitmap]:
    """Every spec's Bitmap. By window, shortest first (among equal windows, the
    one with more windows first), a spec is counted from a base before it
    whose windows divide its own and cover them: the one whose words it
    widens least (a group of 4 leaves 60 windows a word, which may take one
    word more), unless that costs more words than a bitmap of its own; else
    it is a base itself."""
    per_base: dict[HistorySpec, dict[HistorySpec, int]] = {}  # base -> spec -> per
    for spec in sorted(set(specs), key=lambda spec: (spec.window, -spec.windows, spec.lookback)):
        choices = []
        for base, derived in per_base.items():
            per, rest = divmod(spec.window, base.window)
            if not rest and per * spec.windows <= base.windows and math.lcm(per, *derived.values()) <= WORD_BITS:
                widened = _layout(base, {**derived, spec: per})[base].words - _layout(base, derived)[base].words
                choices.append((widened, len(choices), base, per))
        if choices and min(choices)[0] <= -(-spec.windows // WORD_BITS):  # no more words than a bitmap of its own
            _, _, base, per = min(choices)
            per_base[base][spec] = per
        else:
            per_base[spec] = {spec: 1}
    return {spec: bitmap for base, derived in per_base.items() for spec, bitmap in _layout(base, derived).items()}


def _layout(base: HistorySpec, derived: Mapping[HistorySpec, int]) -> dict[HistorySpec, Bitmap]:
    """The Bitmaps of the specs counted from ``base`` (spec -> base windows per
    window): words of a whole number of every group."""
    group = math.lcm(*derived.values())
    bits = WORD_BITS - WORD_BITS % group
    return {spec: Bitmap(base, per, bits) for spec, per in derived.items()}


# --------------------------------------------------------------------------- the query


def history_query(project: Project, dialect: str, specs: Sequence[HistorySpec], now: datetime,
                  customer_ids: Sequence[int] | None = None) -> str:
    """One SELECT: customer_id, then per look-back ``orders_i, revenue_i, items_i``
    and per base spec (``bitmaps``) its bitmap of windows with an order,
    ``windows_j_w`` for word ``w`` of its ``words`` (bit ``k`` of word ``w``:
    window ``bits * w + k``; 0 or NULL: none of the word's windows) (``i``/``j``
    index the sorted distinct look-backs/specs)."""
    specs = sorted(set(specs))
    layout = bitmaps(specs)
    lookbacks = sorted({spec.lookback for spec in specs})
    orders = project.data_source.table("orders")
    now = now.astimezone(UTC)

    def col(logical: str) -> exp.Column:
        return exp.column(orders.column(logical), table="o", quoted=True)

    def row(name: str) -> exp.Column:  # a column of the inner SELECT below
        return exp.column(name, table="h", quoted=True)

    def since(ts: exp.Column, delta: timedelta) -> exp.Expression:
        return exp.GT(this=ts, expression=_timestamp(now - delta))

    def when(condition: exp.Expression, value: exp.Expression) -> exp.Expression:
        return exp.Case(ifs=[exp.If(this=condition, true=value)])

    # Inner SELECT: the completed orders of the look-back, each with its window index under
    # every spec, computed once per row. Written inside the aggregates instead, the index is
    # evaluated again in every CASE of every word (DuckDB shares no expression across CASE
    # branches): about a quarter slower at 1M customers.
    # The age and the windows in whole microseconds, divided as integers: ~10% less CPU for
    # the whole query than FLOOR of a division of seconds as doubles (DuckDB, 1M customers).
    age = exp.Paren(this=exp.Sub(this=exp.Literal.number(_micros(now)),
                                 expression=epoch_micros(exp.cast(col("ts"), "TIMESTAMPTZ"), dialect)))
    inner_columns = [exp.alias_(col(name), name, quoted=True) for name in ("customer_id", "ts", "total", "items")]
    bases = [(j, spec, layout[spec]) for j, spec in enumerate(specs) if layout[spec].base == spec]
    for j, spec, _ in bases:
        index = exp.cast(exp.IntDiv(this=age.copy(), expression=exp.Literal.number(_micros(spec.window))), "BIGINT")
        inner_columns.append(exp.alias_(index, f"index_{j}", quoted=True))
    # How far back any aggregate reads: the longest look-back, or a window longer than its
    # look-back (a spec has at least one window).
    bound = max(lookbacks[-1], max(spec.window * spec.windows for spec in specs))
    conditions = [
        exp.EQ(this=col("status"), expression=exp.Literal.string("completed")),
        exp.LTE(this=col("ts"), expression=_timestamp(now)),
        since(col("ts"), bound),
    ]
    if customer_ids is not None:
        conditions.append(in_ids(col("customer_id"), customer_ids))
    inner = exp.select(*inner_columns).from_(exp.to_table(orders.table, alias="o")).where(exp.and_(*conditions))

    def within(lookback: timedelta, value: exp.Expression) -> exp.Expression:
        """``value`` for the orders of the look-back: every row's, for the longest one."""
        return value if lookback == bound else when(since(row("ts"), lookback), value)

    columns: list[exp.Expression] = [exp.alias_(row("customer_id"), "customer_id", quoted=True)]
    for i, lookback in enumerate(lookbacks):
        columns.append(exp.alias_(exp.Count(this=within(lookback, exp.Literal.number(1))), f"orders_{i}", quoted=True))
        columns.append(exp.alias_(exp.Sum(this=within(lookback, row("total"))), f"revenue_{i}", quoted=True))
        columns.append(exp.alias_(exp.Sum(this=within(lookback, row("items"))), f"items_{i}", quoted=True))
    for j, spec, bitmap in bases:
        index, bits = row(f"index_{j}"), bitmap.bits
        for w in range(bitmap.words):
            # Bit (index mod bits) of word w, set where the index falls in that word and in
            # the spec's windows (index < windows: the order lies within windows x window of
            # now). The condition, as 0 or 1, is shifted itself instead of guarding a shifted
            # 1 in a CASE: ~8% less CPU for the whole query (DuckDB, 1M customers). The index
            # is never negative (no order after now), so every shift is in [0, 63): DuckDB
            # raises on a shift out of range rather than yield 0.
            inside = exp.LT(this=index.copy(), expression=exp.Literal.number(min(bits * (w + 1), spec.windows)))
            if w > 0:
                inside = exp.and_(exp.GTE(this=index.copy(), expression=exp.Literal.number(bits * w)), inside)
            # A BIGINT flag and an INT shift: an INT would wrap (PostgreSQL, Spark shift an int
            # mod 32), and PostgreSQL has bigint << integer but no bigint << bigint; PostgreSQL
            # casts a boolean to INT but not to BIGINT.
            flag = exp.cast(exp.cast(exp.Paren(this=inside), "INT"), "BIGINT")
            shift = exp.cast(exp.Mod(this=index.copy(), expression=exp.Literal.number(bits)), "INT")
            # BIT_OR by name: DuckDB, PostgreSQL and Spark all call it that, and sqlglot 25
            # (the oldest pyproject allows) has no exp.BitwiseOrAgg.
            word = exp.Anonymous(this="BIT_OR", expressions=[exp.BitwiseLeftShift(this=flag, expression=shift)])
            columns.append(exp.alias_(word, f"windows_{j}_{w}", quoted=True))
    query = (
        exp.select(*columns)
        .from_(inner.subquery("h"))
        .group_by(row("customer_id"))
        .order_by(exp.column("customer_id", quoted=True))
    )
    return query.sql(dialect=dialect)


def load_history(project: Project, source: DataSource, specs: Sequence[HistorySpec], customer_ids: Sequence[int] | None,
                 now: datetime) -> dict[HistorySpec, CustomerHistory]:
    """The history of ``customer_ids`` (None: everyone) under every spec, in one query."""
    specs = sorted(set(specs))
    if not specs:
        return {}
    ids = None if customer_ids is None else distinct_ids(customer_ids)
    in_sql = ids.tolist() if ids is not None and len(ids) <= IN_LIST_LIMIT else None
    table = source.query(history_query(project, source.dialect, specs, now, in_sql))
    if table.column("customer_id").null_count:  # not in sound data; never asked for
        table = table.filter(pc.is_valid(table.column("customer_id")))
    found = table.column("customer_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    # The rows to keep, in customer order: None when the query's order and selection already are.
    rows = None if len(found) < 2 or bool(np.all(found[1:] > found[:-1])) else np.argsort(found, kind="stable")
    if ids is not None and in_sql is None:  # read for everyone: keep the customers asked for
        wanted = locate(ids, found if rows is None else found[rows]) >= 0
        if not wanted.all():
            rows = np.flatnonzero(wanted) if rows is None else rows[wanted]

    def column(name: str) -> np.ndarray:
        """A float64 column, nulls as 0, in the rows kept. The cast stays in Arrow: a SUM
        of integers can arrive as DECIMAL, which numpy would convert through Python objects."""
        values = pc.fill_null(table.column(name).cast(pyarrow.float64()), 0).to_numpy(zero_copy_only=False)
        return values if rows is None else values[rows]

    layout = bitmaps(specs)

    def words(base: HistorySpec) -> list[np.ndarray]:
        """The base's bitmap words as uint64. Nulls are filled before leaving Arrow
        (through float64 a word above 2**53 would lose bits)."""
        j = specs.index(base)
        return [pc.fill_null(table.column(f"windows_{j}_{w}").cast(pyarrow.int64()), 0).to_numpy(zero_copy_only=False)
                .astype(np.uint64, copy=False) for w in range(layout[base].words)]

    bitmap_words = {base: words(base) for base in {bitmap.base for bitmap in layout.values()}}  # once for the specs sharing them

    def windows(spec: HistorySpec) -> np.ndarray:
        """Windows with an order, counted from the base's words."""
        counted = layout[spec].count(bitmap_words[layout[spec].base], spec.windows)
        return counted if rows is None else counted[rows]

    customers = found if rows is None else found[rows]
    lookbacks = sorted({spec.lookback for spec in specs})
    totals = {lookback: (column(f"orders_{i}").astype(np.int64), column(f"revenue_{i}"), column(f"items_{i}"))
              for i, lookback in enumerate(lookbacks)}  # specs of one look-back share its columns
    index = IdIndex(customers)  # the specs share their customers: one table, not one per spec (~30 ms each at 1M)
    return {spec: CustomerHistory(spec, customers, *totals[spec.lookback], windows(spec), index) for spec in specs}


def _timestamp(value: datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMPTZ")


def _micros(value: datetime | timedelta) -> int:
    """An instant as microseconds since 1970, or a duration in microseconds: exact integers."""
    if isinstance(value, datetime):
        value = value - datetime(1970, 1, 1, tzinfo=UTC)
    return value // timedelta(microseconds=1)
