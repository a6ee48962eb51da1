"""Data-quality checks on a project's customer data (``campaignctl data check``).

Segments silently give wrong audiences on dirty data: a duplicated customer is
messaged twice, an order with an unknown status never counts as a purchase, a
future timestamp makes "days since last order" negative. These checks find that
before a campaign does.

Every check runs inside the source, in SQL: one dialect-neutral query per
table, written once and transpiled with sqlglot to the source's dialect, so the
same checks run unchanged on DuckDB, PostgreSQL and Spark and no table is
pulled into Python. A query returns one row: per check, how many rows fail it
and the smallest and largest failing value as examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import sqlglot
from sqlglot import exp

from .contracts import DataSource
from .datacontract import CONSENT_CHANNELS, CONSENT_STATUSES, EVENT_TYPES, LOYALTY_TIERS, ORDER_CHANNELS, ORDER_STATUSES
from .model import Project

ERROR = "error"
WARNING = "warning"

# Allowed values of the contract's enumerated columns (docs/format.md).

# The neutral dialect the checks are written in; sqlglot reads it and writes the source's.
_NEUTRAL = "duckdb"

_MESSAGES = {
    "missing_table": "the table is missing",
    "null": "required value is null",
    "duplicate_id": "rows share an id that should be unique",
    "unknown_value": "value outside the data contract's allowed values",
    "future_timestamp": "timestamp is later than now",
    "negative_total": "negative total on an order that is not a return",
    "unknown_customer": "order of a customer missing from customers",
    "items_mismatch": "items differs from the sum of the order's line quantities",
}


@dataclass(frozen=True)
class DataIssue:
    """One problem found in the data: ``count`` rows of ``table`` (logical name)
    fail check ``problem`` on ``column``; ``examples`` are values from failing
    rows (the offending value, or the row's id when the value itself is null)."""

    table: str
    column: str | None
    problem: str  # a key of _MESSAGES: stable, for scripts reading --format json
    count: int
    examples: tuple[str, ...] = ()
    severity: str = ERROR

    @property
    def message(self) -> str:
        return _MESSAGES.get(self.problem, self.problem)

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        shown = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return f"{self.severity}: {where}: {self.message}: {self.count} row(s){shown}"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "table": self.table,
            "column": self.column,
            "problem": self.problem,
            "message": self.message,
            "count": self.count,
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class _Check:
    """One row-level check: rows where ``condition`` holds fail it. Columns are
    logical names, written as {name} in ``condition`` and resolved to the
    physical (quoted) names; {name} works for ``joins`` aliases too."""

    column: str
    problem: str
    severity: str
    condition: str
    example: str  # logical column shown as an example of a failing row
    needs: tuple[str, ...]  # logical columns the check reads (skipped when one is missing)
    join: str | None = None  # a key of _JOINS the condition refers to


def _null(column: str, key: str, severity: str = ERROR) -> _Check:
    return _Check(column, "null", severity, f"{{{column}}} IS NULL", key, (column,))


def _unknown(column: str, allowed: tuple[str, ...], severity: str) -> _Check:
    values = ", ".join(exp.Literal.string(v).sql() for v in allowed)
    return _Check(column, "unknown_value", severity, f"{{{column}}} NOT IN ({values})", column, (column,))


def _future(column: str) -> _Check:
    # Later than now is a warning, not an error: clock skew between systems is
    # common, but "days since" turns negative for such rows. {now_<column>} is
    # now as a literal of the column's own kind (see _now_literal).
    return _Check(column, "future_timestamp", WARNING, f"{{{column}}} > {{now_{column}}}", column, (column,))


def _duplicate(column: str) -> _Check:
    return _Check(column, "duplicate_id", ERROR, "dup.n > 1", column, (column,), join="duplicates")


# The checks per logical table. Severity: error where campaigns would act
# wrongly (a customer messaged twice, a consent misread, a purchase not
# counted); warning where the data is suspicious but campaigns still work.
CHECKS: dict[str, tuple[_Check, ...]] = {
    "customers": (
        _null("customer_id", "email"),
        _duplicate("customer_id"),
        _unknown("loyalty_tier", LOYALTY_TIERS, WARNING),
        _future("created_at"),
    ),
    "consents": (
        _null("customer_id", "channel"),
        _null("channel", "customer_id"),
        _null("status", "customer_id"),
        _null("updated_at", "customer_id"),
        _unknown("channel", CONSENT_CHANNELS, ERROR),
        _unknown("status", CONSENT_STATUSES, ERROR),
        _future("updated_at"),
    ),
    "orders": (
        _null("order_id", "customer_id"),
        _duplicate("order_id"),
        # Anonymous (no loyalty card) orders exist in retail; they only cannot be attributed.
        _null("customer_id", "order_id", WARNING),
        _null("ts", "order_id"),
        _null("status", "order_id"),
        _null("total", "order_id"),
        _unknown("status", ORDER_STATUSES, ERROR),
        _unknown("channel", ORDER_CHANNELS, WARNING),
        _future("ts"),
        _Check(
            "total", "negative_total", ERROR,
            f"{{total}} < 0 AND ({{status}} IS NULL OR {{status}} <> {exp.Literal.string('returned').sql()})",
            "order_id", ("total", "status"),
        ),
        _Check(
            "customer_id", "unknown_customer", WARNING,
            "{customer_id} IS NOT NULL AND customer.k IS NULL", "customer_id", ("customer_id",), join="customers",
        ),
        _Check(
            "items", "items_mismatch", WARNING,
            "line.k IS NOT NULL AND {items} <> line.qty", "order_id", ("items", "order_id"), join="order_lines",
        ),
    ),
    "order_lines": (
        _null("order_id", "product_id"),
        _null("qty", "order_id"),
        _null("price", "order_id"),
    ),
    "products": (_null("product_id", "name"), _duplicate("product_id")),
    "stores": (_null("store_id", "name"), _duplicate("store_id")),
    "events": (
        _null("customer_id", "type", WARNING),
        _null("ts", "customer_id"),
        _null("type", "customer_id"),
        _unknown("type", EVENT_TYPES, WARNING),  # new event types are harmless: no condition reads them
        _future("ts"),
    ),
}

# Tables without which no campaign can run.
_ESSENTIAL = {"customers", "orders"}


def check_data(project: Project, source: DataSource, *, now: datetime) -> list[DataIssue]:
    """Every data issue in the project's data source, table by table in contract order."""
    now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    physical = _physical_columns(project, source)
    issues: list[DataIssue] = []
    for table, checks in CHECKS.items():
        if physical[table] is None:
            severity = ERROR if table in _ESSENTIAL else WARNING
            issues.append(DataIssue(table, None, "missing_table", 0, (project.data_source.table(table).table,), severity))
            continue
        runnable = [check for check in checks if _runnable(check, table, physical)]
        if runnable:
            issues += _run_table(project, source, table, runnable, physical, now)
    return issues


def has_errors(issues: list[DataIssue]) -> bool:
    return any(issue.severity == ERROR for issue in issues)


def _physical_columns(project: Project, source: DataSource) -> dict[str, dict[str, str] | None]:
    """Per logical table: logical column -> physical column name as the source
    spells it (matched case-insensitively, as PostgreSQL folds unquoted names),
    for the columns present; None for a missing table."""
    found: dict[str, dict[str, str] | None] = {}
    for table in CHECKS:
        mapping = project.data_source.table(table)
        present = source.table_columns(mapping.table)
        if present is None:
            found[table] = None
            continue
        by_lower = {name.lower(): name for name in present}
        logical = {c for check in CHECKS[table] for c in (*check.needs, check.example)}
        found[table] = {c: by_lower[mapping.column(c).lower()] for c in logical if mapping.column(c).lower() in by_lower}
    return found


def _runnable(check: _Check, table: str, physical: dict[str, dict[str, str] | None]) -> bool:
    columns = physical[table] or {}
    if not all(column in columns for column in check.needs):
        return False
    if check.join == "customers":
        return "customer_id" in (physical["customers"] or {})
    if check.join == "order_lines":
        return {"order_id", "qty"} <= set(physical["order_lines"] or {})
    return True


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(_NEUTRAL)


def _table_sql(project: Project, table: str) -> str:
    """The physical table name, quoted part by part (``schema.table`` works too)."""
    name = exp.to_table(project.data_source.table(table).table, dialect=_NEUTRAL)
    quoted = name.transform(lambda node: exp.to_identifier(node.name, quoted=True) if isinstance(node, exp.Identifier) else node)
    return quoted.sql(_NEUTRAL)


def _now_literal(typ: pa.DataType, now: datetime, project_timezone: str) -> str | None:
    """``now`` as a SQL literal comparable with a column of Arrow type ``typ``.
    A zoned timestamp is an instant: compare with now in UTC. A timestamp without
    a zone (or a date) is wall-clock time in the project's time zone, as the
    segment compiler reads it: compare with the local wall clock. None: the
    column holds no time (text from a CSV, say), so the check cannot run."""
    if pa.types.is_timestamp(typ) and typ.tz:
        return f"CAST({exp.Literal.string(now.astimezone(timezone.utc).isoformat(sep=' ')).sql()} AS TIMESTAMPTZ)"
    local = now.astimezone(ZoneInfo(project_timezone)).replace(tzinfo=None)
    if pa.types.is_timestamp(typ):
        return f"CAST({exp.Literal.string(local.isoformat(sep=' ')).sql()} AS TIMESTAMP)"
    if pa.types.is_date(typ):
        return f"CAST({exp.Literal.string(local.date().isoformat()).sql()} AS DATE)"
    return None


def _column_types(source: DataSource, project: Project, table: str) -> pa.Schema:
    """The table's column types, from a query that returns no rows."""
    sql = f"SELECT * FROM {_table_sql(project, table)} LIMIT 0"
    return source.query(sqlglot.transpile(sql, read=_NEUTRAL, write=source.dialect)[0]).schema


def _table_query(project: Project, table: str, checks: list[_Check], physical: dict, now_literals: dict[str, str]) -> str:
    """The one query for ``table``: per check i, c{i} = failing rows, lo{i}/hi{i} = examples."""
    columns = physical[table]
    names = {logical: f"r.{_ident(name)}" for logical, name in columns.items()}
    names.update({f"now_{logical}": literal for logical, literal in now_literals.items()})
    select = ["COUNT(*) AS n_rows"]
    for i, check in enumerate(checks):
        condition = check.condition.format(**names)
        example = f"CAST({names[check.example]} AS VARCHAR)" if check.example in columns else "NULL"
        select += [
            f"COUNT(CASE WHEN {condition} THEN 1 END) AS c{i}",
            f"MIN(CASE WHEN {condition} THEN {example} END) AS lo{i}",
            f"MAX(CASE WHEN {condition} THEN {example} END) AS hi{i}",
        ]
    joins = [_join(project, table, join, physical) for join in sorted({c.join for c in checks if c.join})]
    return f"SELECT {', '.join(select)} FROM {_table_sql(project, table)} AS r {' '.join(joins)}"


def _join(project: Project, table: str, join: str, physical: dict) -> str:
    """LEFT JOINs to one row per key, so the table's own rows are never multiplied."""
    if join == "duplicates":
        key = _ident(physical[table][_key_of(table)])
        return f"LEFT JOIN (SELECT {key} AS k, COUNT(*) AS n FROM {_table_sql(project, table)} GROUP BY {key}) AS dup ON r.{key} = dup.k"
    if join == "customers":
        key = _ident(physical["customers"]["customer_id"])
        own = _ident(physical[table]["customer_id"])
        return f"LEFT JOIN (SELECT DISTINCT {key} AS k FROM {_table_sql(project, 'customers')}) AS customer ON r.{own} = customer.k"
    if join == "order_lines":
        key = _ident(physical["order_lines"]["order_id"])
        qty = _ident(physical["order_lines"]["qty"])
        own = _ident(physical[table]["order_id"])
        return (
            f"LEFT JOIN (SELECT {key} AS k, SUM({qty}) AS qty FROM {_table_sql(project, 'order_lines')} GROUP BY {key}) AS line"
            f" ON r.{own} = line.k"
        )
    raise ValueError(f"unknown join {join!r}")


def _key_of(table: str) -> str:
    return next(check.column for check in CHECKS[table] if check.problem == "duplicate_id")


def _run_table(project: Project, source: DataSource, table: str, checks: list[_Check], physical: dict, now: datetime) -> list[DataIssue]:
    now_literals = {}
    if any(check.problem == "future_timestamp" for check in checks):
        types = _column_types(source, project, table)
        for check in checks:
            if check.problem == "future_timestamp":
                literal = _now_literal(types.field(physical[table][check.column]).type, now, project.timezone)
                if literal:
                    now_literals[check.column] = literal
        checks = [c for c in checks if c.problem != "future_timestamp" or c.column in now_literals]
    neutral = _table_query(project, table, checks, physical, now_literals)
    sql = sqlglot.transpile(neutral, read=_NEUTRAL, write=source.dialect)[0]
    row = source.query(sql).to_pylist()[0]
    issues = []
    for i, check in enumerate(checks):
        count = int(row[f"c{i}"] or 0)
        if count:
            examples = tuple(dict.fromkeys(str(v) for v in (row[f"lo{i}"], row[f"hi{i}"]) if v is not None))
            issues.append(DataIssue(table, check.column, check.problem, count, examples, check.severity))
    return issues
