"""The data-source contract: one harness every data source runs through.

Each source (duckdb, postgres, spark, and any plugin added to harness.SOURCES)
is given the same small data set (dataset.py) and must:

- satisfy the DataSource protocol and name a dialect sqlglot knows;
- describe present tables, column by column, and return None for absent ones;
- return, for the same SQL transpiled to its dialect, the same values as
  were written: timestamps to the microsecond, with and without a zone; dates;
  exact decimals; NULL apart from the empty string;
- put the same customers in the same segments (once campaignctl.segments exists);
- give the planner the same customer facts whether it reads them in the
  segments query or with load_customer_facts's own query.

Values are compared after a documented normalisation (``normalise``) that
only forgives what engines legitimately do differently.
"""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot

from campaignctl.contracts import DataSource

from . import dataset
from .harness import SOURCES, open_source

_MARKS = {"postgres": [pytest.mark.postgres], "spark": [pytest.mark.spark, pytest.mark.slow]}
NEUTRAL = "duckdb"  # the dialect the harness writes its SQL in


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return dataset.build()


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory, tables) -> Path:
    root = tmp_path_factory.mktemp("contract-project")
    dataset.write(tables, root / "data")
    (root / "campaignctl.yaml").write_text(PROJECT_FILE)
    (root / "segments.yaml").write_text(SEGMENTS_FILE)
    return root


@pytest.fixture(scope="module", params=[pytest.param(name, marks=_MARKS.get(name, [])) for name in SOURCES])
def source(request, project_dir) -> DataSource:
    opened = open_source(request.param, project_dir / "data", request)
    yield opened
    opened.close()


def run(source: DataSource, neutral_sql: str) -> pa.Table:
    return source.query(sqlglot.transpile(neutral_sql, read=NEUTRAL, write=source.dialect)[0])


# --------------------------------------------------------------------------- normalisation


def family(typ: pa.DataType) -> str:
    """The kind of a column, coarse where engines legitimately differ:
    - integer widths (COUNT, SUM of ints, int32 vs int64 storage) are one "integer";
    - string, large_string and string_view are one "string" (Spark 4 and
      DuckDB choose differently for the same data);
    - a zoned timestamp is "timestamptz" whatever zone name the engine attaches
      (UTC, Etc/UTC): the instant is what matters, compared in UTC below.
    Zoned vs. wall-clock timestamps, dates, decimals, floats and booleans stay apart:
    mixing them up is a real bug."""
    if pa.types.is_integer(typ):
        return "integer"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or str(typ) == "string_view":
        return "string"
    if pa.types.is_timestamp(typ):
        return "timestamptz" if typ.tz else "timestamp"
    if pa.types.is_decimal(typ):
        return "decimal"
    if pa.types.is_floating(typ):
        return "float"
    return str(typ)


def normalise(value):
    """A value compared across engines: instants in UTC; decimals by value (1.2 == 1.20)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    if isinstance(value, Decimal):
        return value.normalize() if value else Decimal(0)
    return value


def rows(table: pa.Table) -> list[tuple]:
    """The rows, normalised and sorted (engines return unordered results, and
    sort NULLs differently, so the harness sorts instead of ORDER BY)."""
    normalised = [tuple(normalise(v) for v in row.values()) for row in table.to_pylist()]
    return sorted(normalised, key=lambda row: tuple((v is None, str(type(v)), v if v is not None else 0) for v in row))


def assert_same(result: pa.Table, expected: pa.Table, *, numbers_as_decimal: bool = False) -> None:
    assert result.column_names == expected.column_names
    got = [family(t) for t in result.schema.types]
    want = [family(t) for t in expected.schema.types]
    if numbers_as_decimal:  # aggregates: engines widen SUM/AVG differently (decimal(38,2), numeric, double)
        got = ["number" if f in ("integer", "decimal", "float") else f for f in got]
        want = ["number" if f in ("integer", "decimal", "float") else f for f in want]
    assert got == want, f"column kinds differ: {dict(zip(result.column_names, got))} != {dict(zip(expected.column_names, want))}"
    assert result.num_rows == expected.num_rows
    assert rows(result) == rows(expected)


# --------------------------------------------------------------------------- the protocol


def test_is_a_data_source_with_a_known_dialect(source, request):
    assert isinstance(source, DataSource)
    assert source.dialect == request.node.callspec.params["source"]
    sqlglot.Dialect.get_or_raise(source.dialect)


def test_table_columns_of_every_table_in_order(source, tables):
    for name, table in tables.items():
        assert source.table_columns(name) == table.column_names, name


def test_table_columns_of_an_absent_table_is_none(source):
    assert source.table_columns("no_such_table") is None


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("table", ["customers", "orders", "order_lines", "events", "consents", "products", "stores"])
def test_every_value_round_trips(source, tables, table):
    """SELECT * gives back exactly what was written: zoned and wall-clock
    timestamps to the microsecond, dates (leap day, 1970), decimal(12,2),
    NULL next to '', quotes, newlines and non-ASCII text."""
    assert_same(run(source, f"SELECT * FROM {table}"), tables[table])


def test_empty_result_keeps_its_column_types(source, tables):
    result = run(source, "SELECT order_id, ts, total, status FROM orders WHERE 1 = 0")
    assert result.num_rows == 0
    assert_same(result, tables["orders"].select(["order_id", "ts", "total", "status"]).slice(0, 0))


def test_aggregates_per_customer(source, tables):
    """GROUP BY with the functions segments compile to, against the same sums done in Python."""
    result = run(
        source,
        """
        SELECT customer_id,
               COUNT(*) AS orders,
               SUM(CASE WHEN status = 'completed' THEN total ELSE 0 END) AS revenue,
               MIN(ts) AS first_ts,
               MAX(ts) AS last_ts,
               COUNT(DISTINCT CAST(ts AS DATE)) AS days,
               COUNT(promo_code) AS with_code
        FROM orders GROUP BY customer_id
        """,
    )
    per_customer: dict[int, list] = {}
    for order in tables["orders"].to_pylist():
        acc = per_customer.setdefault(order["customer_id"], [0, Decimal(0), None, None, set(), 0])
        acc[0] += 1
        acc[1] += order["total"] if order["status"] == "completed" else 0
        acc[2] = min(acc[2] or order["ts"], order["ts"])
        acc[3] = max(acc[3] or order["ts"], order["ts"])
        acc[4].add(order["ts"].date())
        acc[5] += order["promo_code"] is not None
    expected = pa.Table.from_pylist(
        [
            {"customer_id": cid, "orders": n, "revenue": revenue, "first_ts": first, "last_ts": last, "days": len(days), "with_code": codes}
            for cid, (n, revenue, first, last, days, codes) in per_customer.items()
        ],
        schema=pa.schema([("customer_id", pa.int64()), ("orders", pa.int64()), ("revenue", pa.decimal128(38, 2)),
                          ("first_ts", dataset.TS), ("last_ts", dataset.TS), ("days", pa.int64()), ("with_code", pa.int64())]),
    )
    assert_same(result, expected, numbers_as_decimal=True)


def test_timestamp_and_date_literals_compare_as_the_same_instant(source, tables):
    """Segment SQL carries `now` as literals; every engine must read them alike
    (sessions in UTC) for wall-clock and zoned columns and for dates."""
    result = run(
        source,
        """
        SELECT
          (SELECT COUNT(*) FROM orders WHERE ts >= CAST('2026-05-01 00:00:00' AS TIMESTAMP)) AS recent_orders,
          (SELECT COUNT(*) FROM customers WHERE created_at < CAST('2024-03-01 00:00:00+00:00' AS TIMESTAMPTZ)) AS early_customers,
          (SELECT COUNT(*) FROM customers WHERE birthday BETWEEN CAST('1970-01-01' AS DATE) AND CAST('1980-12-31' AS DATE)) AS seventies
        """,
    )
    customers = tables["customers"].to_pylist()
    assert result.to_pylist() == [{
        "recent_orders": sum(o["ts"] >= datetime(2026, 5, 1) for o in tables["orders"].to_pylist()),
        "early_customers": sum(c["created_at"] < datetime(2024, 3, 1, tzinfo=timezone.utc) for c in customers),
        "seventies": sum(c["birthday"] is not None and date(1970, 1, 1) <= c["birthday"] <= date(1980, 12, 31) for c in customers),
    }]


# --------------------------------------------------------------------------- segments

PROJECT_FILE = textwrap.dedent(
    """\
    version: 1
    name: contract-test
    timezone: UTC
    currency: RUB
    data_source:
      plugin: duckdb
      options: {path: data}
    channels:
      email: {plugin: outbox, kind: email, cost: 0.1, options: {path: out/email.jsonl}}
    """
)

# One segment per kind of condition the compiler emits, so that a dialect gap
# shows up as a named segment whose members differ.
SEGMENTS = {
    "moscow": {"customer": {"field": "city", "in": ["Moscow"]}},
    "no_city": {"customer": {"field": "city", "is_null": True}},
    "big_spenders": {"orders": {"metric": "sum", "of": "total", "period": {"last": "365d"}, "gte": 5000}},
    "frequent": {"orders": {"metric": "count", "period": {"last": "2y"}, "gte": 3}},
    "lapsed": {"orders": {"metric": "days_since_last", "gt": 90}},
    "high_avg_check": {"orders": {"metric": "avg", "of": "total", "gte": 3000}},
    "kitchen_buyers": {"order_lines": {"metric": "sum", "of": "amount", "category": "kitchen", "gt": 0}},
    "many_days": {"orders": {"metric": "distinct_days", "period": {"ago": ["365d", "30d"]}, "gte": 2}},
    "weekend_online": {"orders": {"metric": "count", "weekday": ["sat", "sun"], "channel": "online", "gte": 1}},
    "viewers": {"events": {"metric": "count", "type": "product_viewed", "period": {"last": "7d"}, "gte": 1}},
    "abandoned_cart": {"abandoned": {"event": "cart_updated", "after": "1h", "within": "14d"}},
    "birthday_soon": {"birthday": {"within_days": 7}},
    "email_ok": {"reachable": "email"},
    "sms_consent": {"consent": "sms"},
    "whatsapp_consent": {"consent": "whatsapp"},
    "half": {"sample": {"percent": 50, "salt": "contract"}},
    "mixed": {"all": [{"segment": "moscow"}, {"not": {"segment": "big_spenders"}}, {"any": [{"segment": "email_ok"}, {"segment": "sms_consent"}]}]},
}


def _segments_yaml() -> str:
    import json

    lines = ["version: 1", "segments:"]
    lines += [f"  {name}:\n    where: {json.dumps(where)}" for name, where in SEGMENTS.items()]  # JSON is YAML
    return "\n".join(lines) + "\n"


SEGMENTS_FILE = _segments_yaml()


def _segments_api():
    return importlib.import_module("campaignctl.segments")


def members(audiences) -> dict[str, set[int]]:
    """Segment name -> set of customer ids, from evaluate_segments' Audiences
    (``.members``: name -> sorted numpy array of ids)."""
    found = getattr(audiences, "members", audiences)
    assert isinstance(found, Mapping), f"evaluate_segments returned {type(audiences).__name__} without a .members mapping"
    return {name: {int(i) for i in ids} for name, ids in found.items()}


@pytest.fixture(scope="module")
def reference_members(project_dir, request):
    """Segment membership on DuckDB, the embedded default, which the others must match."""
    segments = _segments_api()
    from campaignctl.project import load_project

    duck = open_source("duckdb", project_dir / "data", request)  # skips while duckdb is not registered
    project = load_project(project_dir)
    try:
        return members(segments.evaluate_segments(project, duck, list(SEGMENTS), now=dataset.NOW))
    finally:
        duck.close()


def test_segment_membership_is_identical_on_every_source(source, project_dir, reference_members):
    from campaignctl.project import load_project

    # The project names duckdb, but only its table mappings (none here) matter
    # to compiling; the SQL runs on the source handed in.
    project = load_project(project_dir)
    got = members(_segments_api().evaluate_segments(project, source, list(SEGMENTS), now=dataset.NOW))
    differing = {seg: (sorted(got[seg] - ref)[:5], sorted(ref - got[seg])[:5]) for seg, ref in reference_members.items() if got.get(seg) != ref}
    assert not differing, f"segments differing from DuckDB (extra, missing): {differing}"
    assert any(reference_members.values()), "the data set should put someone in some segment"


def test_the_latest_consent_decides_to_the_microsecond_and_revokes_on_a_tie(source, project_dir):
    """dataset.DECIDING_CONSENTS: ties, a microsecond apart either way, before 1970."""
    from campaignctl.facts import load_customer_facts
    from campaignctl.project import load_project

    project = load_project(project_dir)
    got = members(_segments_api().evaluate_segments(project, source, ["whatsapp_consent"], now=dataset.NOW))
    assert got["whatsapp_consent"] == dataset.WHATSAPP_GRANTED
    facts = load_customer_facts(project, source, range(1, 8), dataset.NOW)
    assert {i for i in range(1, 8) if facts.get(i).consents["whatsapp"]} == dataset.WHATSAPP_GRANTED


def test_facts_read_with_the_segments_equal_the_facts_query(source, project_dir):
    """A plan reads the customer facts in its segments query (``columns=FACT_COLUMNS``,
    then facts_from_audiences); they must equal load_customer_facts's own
    query on the same source: same table, types per facts.SCHEMA, id order."""
    from campaignctl.facts import FACT_COLUMNS, facts_from_audiences, load_customer_facts
    from campaignctl.project import load_project

    project = load_project(project_dir)
    audiences = _segments_api().evaluate_segments(project, source, list(SEGMENTS), now=dataset.NOW, columns=FACT_COLUMNS)
    wanted = list(range(1, dataset.CUSTOMERS + 1, 3)) + [10**9]  # and an id no customer has
    got = facts_from_audiences(project, source, audiences, wanted, dataset.NOW)
    expected = load_customer_facts(project, source, wanted, dataset.NOW)
    assert got.table.equals(expected.table) and got.events.equals(expected.events)
    assert got.table.column("customer_id").to_pylist() == wanted[:-1]
    consents, orders = got.table.column("consent_email").to_pylist(), got.table.column("last_order_at").to_pylist()
    assert True in consents and False in consents and any(orders) and None in orders  # the data exercised them


def test_zoned_timestamps_are_read_in_utc_whatever_the_machine_zone(source, tables):
    """A zoned timestamp's date and its comparison with a wall-clock literal must
    not depend on the machine's time zone (PostgreSQL and Spark sessions run in
    UTC). Run the harness with TZ=Asia/Tokyo to check a source for it."""
    result = run(
        source,
        """
        SELECT customer_id, CAST(created_at AS DATE) AS day,
               created_at >= CAST('2024-02-29 23:00:00' AS TIMESTAMP) AS late
        FROM customers WHERE customer_id = 6
        """,
    )
    assert result.to_pylist() == [{"customer_id": 6, "day": date(2024, 2, 29), "late": True}]
