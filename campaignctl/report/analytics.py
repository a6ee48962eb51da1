"""CRM analytics computed on the data source in SQL: the project's own RFM
groups at two dates (the migration matrix), cohort retention by month of the
first purchase, ARPU and LTV per RFM group, and the weekday x channel mix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..model import Project
from .model import Analytics, Cohort, MixCell, SegmentValue
from .sql import portable, timestamp

if TYPE_CHECKING:
    from ..contracts import DataSource

COHORT_MONTHS = 12  # cohorts of the last year, each followed up to now


@dataclass(frozen=True)
class CustomerValues:
    """Per customer (every one, zeros included): revenue in the period and to date."""

    customer_ids: np.ndarray
    period_revenue: np.ndarray
    lifetime_revenue: np.ndarray


def customer_values(project: Project, source: DataSource, start: datetime, end: datetime) -> CustomerValues:
    sql = (
        "SELECT c.customer_id AS customer_id, "
        f"COALESCE(SUM(CASE WHEN o.ts >= {timestamp(start)} THEN o.total ELSE 0 END), 0) AS period_revenue, "
        "COALESCE(SUM(o.total), 0) AS lifetime_revenue "
        "FROM customers AS c LEFT JOIN orders AS o ON o.customer_id = c.customer_id "
        f"AND o.status = 'completed' AND o.ts < {timestamp(end)} "
        "GROUP BY c.customer_id"
    )
    table = source.query(portable(sql, project, source.dialect))
    return CustomerValues(
        table.column("customer_id").to_numpy().astype(np.int64),
        table.column("period_revenue").cast(pa.float64()).to_numpy(),
        table.column("lifetime_revenue").cast(pa.float64()).to_numpy(),
    )


def analytics(project: Project, source: DataSource, values: CustomerValues, start: datetime, end: datetime) -> Analytics:
    feature = next((name for name, f in project.features.items() if f.kind == "rfm"), None)
    groups, matrix, segments = (), (), ()
    if feature is not None:
        before = _rfm_groups(project, source, feature, start)
        after = _rfm_groups(project, source, feature, end)
        groups = _group_order(project, feature, before, after)
        matrix = _migration(before, after, groups)
        segments = _segment_values(after, values, groups)
    return Analytics(
        rfm_feature=feature, rfm_from=start.date() if feature else None, rfm_to=end.date() if feature else None,
        rfm_groups=groups, rfm_matrix=matrix, segments=segments,
        cohorts=cohorts(project, source, end), mix=mix(project, source, start, end),
    )


def _rfm_groups(project: Project, source: DataSource, feature: str, at: datetime) -> pa.Table:
    from ..segments.evaluate import evaluate_segments

    features = evaluate_segments(project, source, [], now=at, features=[feature]).features
    return pa.table({"customer_id": features.column("customer_id").cast(pa.int64()),
                     "group": features.column(feature).cast(pa.string()).fill_null("none")})


def _group_order(project: Project, feature: str, *tables: pa.Table) -> tuple[str, ...]:
    spec = project.features[feature].spec
    written = list((spec.get("groups") or {}).keys()) + [spec.get("fallback", "others")]
    seen = set()
    for table in tables:
        seen |= set(pc.unique(table.column("group")).to_pylist())
    return tuple([g for g in written if g in seen] + sorted(seen - set(written)))


def _migration(before: pa.Table, after: pa.Table, groups: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    joined = before.join(after, "customer_id", right_suffix="_after", join_type="inner")
    counts = joined.group_by(["group", "group_after"]).aggregate([("customer_id", "count")])
    index = {g: i for i, g in enumerate(groups)}
    matrix = np.zeros((len(groups), len(groups)), dtype=np.int64)
    for a, b, n in zip(*(counts.column(c).to_pylist() for c in ("group", "group_after", "customer_id_count"))):
        matrix[index[a], index[b]] += n
    return tuple(tuple(int(v) for v in row) for row in matrix)


def _segment_values(groups_now: pa.Table, values: CustomerValues, groups: tuple[str, ...]) -> tuple[SegmentValue, ...]:
    table = pa.table({"customer_id": values.customer_ids, "period": values.period_revenue, "lifetime": values.lifetime_revenue})
    joined = table.join(groups_now, "customer_id", join_type="inner")
    sums = joined.group_by("group").aggregate([("customer_id", "count"), ("period", "sum"), ("lifetime", "sum")])
    by_group = {g: (n, p, lt) for g, n, p, lt in zip(*(sums.column(c).to_pylist() for c in
                                                      ("group", "customer_id_count", "period_sum", "lifetime_sum")))}
    return tuple(SegmentValue(g, n, p / n, lt / n) for g in groups if g in by_group for n, p, lt in [by_group[g]])


def cohorts(project: Project, source: DataSource, end: datetime) -> tuple[Cohort, ...]:
    last = end.year * 12 + end.month - 1
    first = last - COHORT_MONTHS + 1
    sql = f"""
        WITH months AS (
            SELECT o.customer_id AS customer_id, EXTRACT(YEAR FROM o.ts) * 12 + EXTRACT(MONTH FROM o.ts) - 1 AS m
            FROM orders AS o WHERE o.status = 'completed' AND o.ts < {timestamp(end)} GROUP BY 1, 2),
        firsts AS (SELECT customer_id, MIN(m) AS cohort FROM months GROUP BY customer_id)
        SELECT f.cohort AS cohort, months.m - f.cohort AS age, COUNT(*) AS customers
        FROM months JOIN firsts AS f ON f.customer_id = months.customer_id
        WHERE f.cohort >= {first} GROUP BY 1, 2"""
    table = source.query(portable(sql, project, source.dialect))
    counts: dict[int, dict[int, int]] = {}
    for cohort, age, n in zip(*(table.column(c).to_pylist() for c in ("cohort", "age", "customers"))):
        counts.setdefault(int(cohort), {})[int(age)] = int(n)
    found = []
    for cohort in sorted(counts):
        size = counts[cohort].get(0, 0)
        if size:
            ages = range(last - cohort + 1)
            found.append(Cohort(f"{cohort // 12:04d}-{cohort % 12 + 1:02d}", size,
                                tuple(counts[cohort].get(age, 0) / size for age in ages)))
    return tuple(found)


def mix(project: Project, source: DataSource, start: datetime, end: datetime) -> tuple[MixCell, ...]:
    """Orders by weekday (the project's time zone) and channel. The source
    counts per hour; the weekday is taken here, so no dialect's time-zone
    functions are needed."""
    sql = (
        "SELECT DATE_TRUNC('hour', o.ts) AS hour, o.channel AS channel, COUNT(*) AS orders, SUM(o.total) AS revenue "
        f"FROM orders AS o WHERE o.status = 'completed' AND o.ts >= {timestamp(start)} AND o.ts < {timestamp(end)} GROUP BY 1, 2"
    )
    table = source.query(portable(sql, project, source.dialect))
    zone = ZoneInfo(project.timezone)
    cells: dict[tuple[int, str], list] = {}
    for hour, channel, orders, revenue in zip(*(table.column(c).to_pylist() for c in ("hour", "channel", "orders", "revenue"))):
        hour = hour if hour.tzinfo else hour.replace(tzinfo=timezone.utc)
        cell = cells.setdefault((hour.astimezone(zone).weekday(), str(channel)), [0, 0.0])
        cell[0] += int(orders)
        cell[1] += float(revenue or 0)
    return tuple(MixCell(day, channel, n, rev) for (day, channel), (n, rev) in sorted(cells.items()))
