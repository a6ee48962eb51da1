"""Rows a report is computed from: who was assigned to what (state, or an
assignment file for campaigns other systems sent), the messages and their
outcomes (state), and the orders (the data source).

The data source is asked only for orders in the span the enrollments need
(the pre-period before the first entry to the attribution window after the
last); the join of those orders to enrollments runs locally in DuckDB over
Arrow tables, whatever engine holds the customer data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import pyarrow as pa

from ..model import Project
from .sql import portable, timestamp

if TYPE_CHECKING:
    import duckdb

    from ..contracts import DataSource

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
ENROLLMENTS = pa.schema([("campaign", pa.string()), ("customer_id", pa.int64()), ("grp", pa.string()),
                         ("arm", pa.string()), ("entered_at", TS)])
MESSAGES = pa.schema([("key", pa.string()), ("campaign", pa.string()), ("customer_id", pa.int64()), ("step", pa.int64()),
                      ("channel", pa.string()), ("sent_at", TS), ("cost", pa.float64()), ("delivered", pa.bool_()),
                      ("opened", pa.bool_()), ("clicked", pa.bool_()), ("unsubscribed", pa.bool_())])
GROUPS = ("treatment", "control", "holdout")
FUNNEL_OUTCOMES = ("delivered", "opened", "clicked", "unsubscribed")


class ReportInputError(ValueError):
    """An assignment file or option the report cannot use; the message says what to fix."""


@dataclass(frozen=True)
class Scope:
    """What a report covers: enrollments entered in [start, end), orders up to ``now``."""

    start: datetime | None
    end: datetime
    now: datetime
    window: timedelta  # a conversion is an order within this long after entry
    pre_period: timedelta  # spend before entry, for CUPED

    def covers(self, entered_at: datetime) -> bool:
        return (self.start is None or entered_at >= self.start) and entered_at < self.end


@runtime_checkable
class ReportTables(Protocol):
    """Optional for a state store: the report's rows in bulk, as Arrow tables
    (:data:`ENROLLMENTS`, :data:`MESSAGES`). Without it the report reads them
    through the StateStore methods, which is fine up to ~100k enrollments."""

    def report_tables(self, campaigns: Sequence[str] | None) -> tuple[pa.Table, pa.Table]:
        """Enrollments of ``campaigns`` (None: all) and their sent messages with outcome flags."""


def state_tables(store: Any, scope: Scope, campaign: str | None) -> tuple[pa.Table, pa.Table]:
    """Enrollments entered in the scope and the sent messages of their campaigns."""
    if isinstance(store, ReportTables):
        enrollments, messages = store.report_tables(None if campaign is None else [campaign])
        return _in_scope(enrollments, scope), messages
    rows = [e for e in store.enrollments(campaign) if scope.covers(e.entered_at)]
    enrollments = enrollment_table([(e.campaign, e.customer_id, e.group, e.arm, e.entered_at) for e in rows])
    return enrollments, messages_from_state(store, sorted({e.campaign for e in rows}))


def _in_scope(enrollments: pa.Table, scope: Scope) -> pa.Table:
    import pyarrow.compute as pc

    entered = enrollments.column("entered_at")
    keep = pc.less(entered, pa.scalar(scope.end, TS))
    if scope.start is not None:
        keep = pc.and_(keep, pc.greater_equal(entered, pa.scalar(scope.start, TS)))
    return enrollments.filter(keep)


def enrollment_table(rows: Sequence[tuple]) -> pa.Table:
    """(campaign, customer_id, group, arm, entered_at) rows; ids and times as text or values."""
    columns = list(zip(*rows)) if rows else [()] * 5
    return pa.table([
        pa.array(columns[0], pa.string()), _ids(columns[1]), pa.array(columns[2], pa.string()),
        pa.array(columns[3], pa.string()), _times(columns[4]),
    ], schema=ENROLLMENTS)


def message_table(rows: Sequence[tuple]) -> pa.Table:
    """(key, campaign, customer_id, step, channel, sent_at, cost, delivered, opened, clicked, unsubscribed) rows."""
    columns = list(zip(*rows)) if rows else [()] * 11
    return pa.table([
        pa.array(columns[0], pa.string()), pa.array(columns[1], pa.string()), _ids(columns[2]), pa.array(columns[3], pa.int64()),
        pa.array(columns[4], pa.string()), _times(columns[5]), pa.array(columns[6], pa.float64()),
        *[pa.array([bool(v) for v in columns[i]], pa.bool_()) for i in range(7, 11)],
    ], schema=MESSAGES)


def _ids(values: Sequence[Any]) -> pa.Array:
    return pa.array(values, pa.string()).cast(pa.int64()) if values and isinstance(values[0], str) else pa.array(values, pa.int64())


def _times(values: Sequence[Any]) -> pa.Array:
    return pa.array(values, pa.string()).cast(TS) if values and isinstance(values[0], str) else pa.array(values, TS)


def messages_from_state(store: Any, campaigns: Sequence[str]) -> pa.Table:
    """Sent ledger rows of ``campaigns`` with the outcomes recorded for them."""
    wanted = set(campaigns)
    keys = [key for key in store.message_keys("sent") if key.split("/", 1)[0] in wanted]
    rows = store.messages(keys) if keys else []
    outcomes = store.outcome_types(keys) if keys else {}
    none: frozenset[str] = frozenset()
    # updated_at: the row is finished as sent right after the provider call
    return message_table([
        (m.key, m.campaign, m.customer_id, m.step, m.channel, m.updated_at, float(m.cost), *(t in found for t in FUNNEL_OUTCOMES))
        for m in rows for found in [outcomes.get(m.key, none)]
    ])


def enrollments_from_file(path: Path, experiment: str, scope: Scope) -> pa.Table:
    """An assignment made by another system: CSV or Parquet with ``customer_id``
    and ``group`` (``control`` or ``treatment``, or an arm name meaning treatment
    in that arm), and optionally ``entered_at`` (default: the report's --from)."""
    table = _read_table(path)
    missing = [name for name in ("customer_id", "group") if name not in table.column_names]
    if missing:
        raise ReportInputError(f"{path}: no column {', '.join(map(repr, missing))}; an assignment file has customer_id, "
                               "group (control, treatment or an arm name) and optionally entered_at")
    if "entered_at" not in table.column_names and scope.start is None:
        raise ReportInputError(f"{path}: no entered_at column; give the date the campaign went out with --from")
    ids = _column(table, "customer_id", pa.int64(), path)
    labels = [str(value) for value in table.column("group").to_pylist()]
    entered = (_column(table, "entered_at", TS, path).to_pylist() if "entered_at" in table.column_names
               else [scope.start] * table.num_rows)
    for row, when in enumerate(entered):
        if when is None:
            raise ReportInputError(f"{path}: row {row + 2}: entered_at is empty")
    rows = [(i, label, when) for i, label, when in zip(ids.to_pylist(), labels, entered) if scope.covers(when)]
    return pa.table({
        "campaign": [experiment] * len(rows),
        "customer_id": [i for i, _, _ in rows],
        "grp": ["control" if label == "control" else "treatment" for _, label, _ in rows],
        "arm": [None if label in ("control", "treatment") else label for _, label, _ in rows],
        "entered_at": [when for _, _, when in rows],
    }, schema=ENROLLMENTS)


def _read_table(path: Path) -> pa.Table:
    if not path.exists():
        raise ReportInputError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if path.suffix.lower() in (".csv", ".txt"):
        import pyarrow.csv as pcsv

        try:
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"group": pa.string()}))
        except pa.ArrowInvalid as exc:
            raise ReportInputError(f"{path}: not a readable CSV file: {exc}") from None
    raise ReportInputError(f"{path}: unknown file type {path.suffix!r}; give a .csv or .parquet file")


def _column(table: pa.Table, name: str, type_: pa.DataType, path: Path) -> pa.Array:
    column = table.column(name)
    if pa.types.is_timestamp(type_) and pa.types.is_timestamp(column.type) and column.type.tz is None:
        column = column.cast(pa.timestamp("us")).cast(TS)  # a naive time is UTC, as --now reads it
    try:
        return column.cast(type_).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ReportInputError(f"{path}: column {name!r} cannot be read as {type_}: {exc}") from None


def orders_between(project: Project, source: DataSource, since: datetime, until: datetime) -> pa.Table:
    """Completed orders (customer_id, ts, total) with since < ts <= until."""
    sql = (
        "SELECT o.customer_id AS customer_id, o.ts AS ts, o.total AS total FROM orders AS o "
        f"WHERE o.status = 'completed' AND o.ts > {timestamp(since)} AND o.ts <= {timestamp(until)}"
    )
    table = source.query(portable(sql, project, source.dialect))
    return pa.table({
        "customer_id": table.column("customer_id").cast(pa.int64()),
        "ts": _utc(table.column("ts")),
        "total": table.column("total").cast(pa.float64()),
    })


def _utc(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        return column.cast(pa.timestamp("us")).cast(TS)
    return column.cast(TS)


def order_span(enrollments: pa.Table, scope: Scope) -> tuple[datetime, datetime] | None:
    """The orders the join needs: from the pre-period of the first entry to
    the attribution window of the last, never past ``now``."""
    if enrollments.num_rows == 0:
        return None
    import pyarrow.compute as pc

    first, last = pc.min_max(enrollments.column("entered_at")).values()
    return first.as_py() - scope.pre_period, min(last.as_py() + scope.window, scope.now)


def joined(enrollments: pa.Table, messages: pa.Table, orders: pa.Table, scope: Scope) -> duckdb.DuckDBPyConnection:
    """A local DuckDB holding ``outcomes`` (one row per enrollment: converted,
    revenue in the window, pre-period spend, first conversion) and
    ``attributed`` (the message each conversion came last after)."""
    import duckdb

    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    db.register("enr", enrollments)
    db.register("msg", messages)
    db.register("ord", orders)
    window = f"INTERVAL '{int(scope.window.total_seconds())} seconds'"
    pre = f"INTERVAL '{int(scope.pre_period.total_seconds())} seconds'"
    now = f"CAST('{scope.now.astimezone(UTC).isoformat(sep=' ')}' AS TIMESTAMPTZ)"
    db.execute(f"""
        CREATE TABLE outcomes AS
        SELECT e.campaign, e.customer_id, e.grp, e.arm, e.entered_at,
               e.entered_at + {window} <= {now} AS window_complete,
               COALESCE(SUM(o.total) FILTER (WHERE o.ts > e.entered_at), 0) AS revenue,
               COUNT(o.ts) FILTER (WHERE o.ts > e.entered_at) > 0 AS converted,
               MIN(o.ts) FILTER (WHERE o.ts > e.entered_at) AS converted_at,
               COALESCE(SUM(o.total) FILTER (WHERE o.ts <= e.entered_at), 0) AS pre_revenue
        FROM enr e LEFT JOIN ord o
          ON o.customer_id = e.customer_id AND o.ts > e.entered_at - {pre}
         AND o.ts <= e.entered_at + {window} AND o.ts <= {now}
        GROUP BY ALL
    """)
    # Last touch: the latest message of the campaign sent before the first order.
    db.execute("""
        CREATE TABLE attributed AS
        SELECT m.key, c.revenue
        FROM (SELECT * FROM outcomes WHERE converted AND grp = 'treatment') c
        ASOF JOIN msg m ON m.campaign = c.campaign AND m.customer_id = c.customer_id AND c.converted_at >= m.sent_at
    """)
    return db
