"""The order history the forecast starts from (campaignctl.offers.history) on
the demo retailer: every number equals a plain-Python count over the raw
orders, and PostgreSQL and Spark give what DuckDB gives.

The query returns each customer's windows with an order as a bitmap of BIGINT
words of up to 63 windows each, counted after the query; a spec whose windows
are whole numbers of another's is counted from that one's bitmap. The specs
below put windows in one word, exactly fill a word, spill one window into a
second word, take seven words (1-day windows over a year, 56 a word: the 2- and
7-day specs are counted from them), and are not whole days (36 hours, 63 a word;
the 100-day look-back is counted from the 365-day one). Two made-up customers add
what the demo data rarely hits: an order in every window (every bit of a word
set, so values near 2**63 cross Arrow) and orders exactly on window and
look-back boundaries."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contract.harness import open_source

from campaignctl.demo_data import generate_demo_data
from campaignctl.offers.history import IN_LIST_LIMIT, Bitmap, CustomerHistory, HistorySpec, bitmaps, history_query, load_history
from campaignctl.project import load_project

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
DAY, HOUR, SECOND = timedelta(days=1), timedelta(hours=1), timedelta(seconds=1)

SPECS = [
    HistorySpec(365 * DAY, DAY),  # 365 windows: 6 words
    HistorySpec(365 * DAY, 7 * DAY),  # 52 windows: one word
    HistorySpec(365 * DAY, 36 * HOUR),  # 243 windows of a day and a half: 4 words
    HistorySpec(126 * DAY, 2 * DAY),  # 63 windows: exactly one full word
    HistorySpec(128 * DAY, 2 * DAY),  # 64 windows: the second word holds one
    HistorySpec(100 * DAY, 36 * HOUR),  # 66 windows over 99 of the 100 days
    HistorySpec(30 * DAY, 7 * DAY),  # 4 windows over 28 of the 30 days
]

EVERY_DAY = 900_000_001  # a completed order in each of the last 365 days
ON_EDGES = 900_000_002  # orders exactly on window and look-back boundaries
FAR_BACK = 900_000_003  # one order 200 days ago: outside most specs' look-back

PROJECT = """\
version: 1
name: history
timezone: UTC
currency: RUB
data_source: {plugin: duckdb, options: {path: data}}
channels:
  email: {plugin: outbox, kind: email, cost: 0.15}
"""


def made_up_orders() -> list[tuple[int, datetime, str]]:
    rows = [(EVERY_DAY, NOW - k * DAY - HOUR, "completed") for k in range(365)]
    edges = [
        NOW,  # age 0: window 0
        NOW + SECOND,  # in the future: not counted
        NOW - 365 * DAY,  # exactly a look-back ago: outside it (windows are (now - (k+1)W, now - kW])
        NOW - 365 * DAY + SECOND,
        NOW - 56 * DAY,  # 1-day window 56: bit 0 of the second word
        NOW - 56 * DAY + SECOND,  # window 55: the last bit of the first word; 2-day window 27, 7-day window 7
        NOW - 63 * DAY,  # 1-day window 63
        NOW - 63 * DAY + SECOND,
        NOW - 63 * 36 * HOUR,  # 36-hour window 63
        NOW - 63 * 36 * HOUR + SECOND,
        NOW - 126 * DAY + SECOND,  # the oldest moment of the 126-day look-back
        NOW - 99 * DAY,  # 36-hour windows of the 100-day look-back end here; the look-back goes on
        NOW - 99 * DAY - HOUR,
        NOW - 28 * DAY - HOUR,  # after the 30-day spec's 4 weekly windows, inside its look-back
    ]
    rows += [(ON_EDGES, ts, "completed") for ts in edges]
    rows += [(ON_EDGES, NOW - 2 * DAY, "cancelled"), (ON_EDGES, NOW - 3 * DAY, "returned")]
    rows += [(FAR_BACK, NOW - 200 * DAY, "completed")]
    return rows


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("history") / "project"
    generate_demo_data(root / "data", 2500, seed=17, as_of=NOW)
    (root / "campaignctl.yaml").write_text(PROJECT)
    schema = pq.read_schema(sorted((root / "data" / "orders").glob("*.parquet"))[0])
    rows = made_up_orders()
    extra = {
        "order_id": [10**12 + n for n in range(len(rows))],
        "customer_id": [customer for customer, _, _ in rows],
        "ts": [ts for _, ts, _ in rows],
        "status": [status for _, _, status in rows],
        "total": [round(100 + 7.31 * n, 2) for n in range(len(rows))],
        "items": [1 + n % 4 for n in range(len(rows))],
    }
    table = pa.table({field.name: pa.array(extra.get(field.name, [None] * len(rows)), field.type) for field in schema}, schema=schema)
    pq.write_table(table, root / "data" / "orders" / "part-made-up.parquet")
    return root


@pytest.fixture(scope="module")
def project(project_dir):
    return load_project(project_dir)


@pytest.fixture(scope="module")
def expected(project_dir) -> dict[HistorySpec, CustomerHistory]:
    """The history worked out from the raw orders, one order at a time, in whole microseconds."""
    orders = pq.read_table(project_dir / "data" / "orders", columns=["customer_id", "ts", "status", "total", "items"]).to_pylist()
    # Listed: everyone with a completed order in the longest look-back of the specs asked for together.
    longest = max(max(spec.lookback, spec.window * spec.windows) for spec in SPECS)
    listed = {o["customer_id"] for o in orders if o["status"] == "completed" and NOW - longest < o["ts"] <= NOW}
    result = {}
    for spec in SPECS:
        rows = {customer: {"customer_id": customer, "orders": 0, "revenue": 0.0, "items": 0} for customer in listed}
        windows = defaultdict(set)
        for o in orders:
            if o["status"] != "completed" or not o["ts"] <= NOW:
                continue
            if o["ts"] > NOW - spec.lookback:
                row = rows[o["customer_id"]]
                row["orders"] += 1
                row["revenue"] += o["total"]
                row["items"] += o["items"]
            if o["ts"] > NOW - spec.window * spec.windows:
                windows[o["customer_id"]].add((NOW - o["ts"]) // spec.window)
        for customer, seen in windows.items():
            assert all(0 <= k < spec.windows for k in seen)
            rows[customer]["windows"] = len(seen)
        result[spec] = CustomerHistory.from_rows(spec, rows.values())
    return result


def assert_same(got: CustomerHistory, want: CustomerHistory) -> None:
    """Equal counts; revenue to the kopeck (engines add the same doubles in their own order,
    and campaignctl.offers.history.segment_history rounds the sums to kopecks too)."""
    assert got.spec == want.spec
    np.testing.assert_array_equal(got.customer_ids, want.customer_ids)
    for name in ("orders", "items", "windows"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{got.spec.key}: {name}")
    np.testing.assert_array_equal(np.round(got.revenue, 2), np.round(want.revenue, 2), err_msg=f"{got.spec.key}: revenue")
    assert (got.orders.dtype, got.revenue.dtype, got.items.dtype, got.windows.dtype) == (np.int64, np.float64, np.float64, np.int64)


def windows_of(history: CustomerHistory, customer: int) -> int:
    return int(history.windows[np.searchsorted(history.customer_ids, customer)])


@pytest.fixture(scope="module")
def on_duckdb(project, project_dir, request) -> dict[HistorySpec, CustomerHistory]:
    source = open_source("duckdb", project_dir / "data", request)
    try:
        return load_history(project, source, SPECS, None, NOW)
    finally:
        source.close()


def test_the_specs_cover_the_word_edges():
    assert [spec.windows for spec in SPECS] == [365, 52, 243, 63, 64, 66, 4]
    layout = bitmaps(SPECS)
    by_day, by_36_hours = SPECS[0], SPECS[2]
    assert [(layout[spec].base, layout[spec].per) for spec in SPECS] == [
        (by_day, 1), (by_day, 7), (by_36_hours, 1), (by_day, 2), (by_day, 2), (by_36_hours, 1), (by_day, 7)]
    assert [(layout[spec].bits, layout[spec].words) for spec in (by_day, by_36_hours)] == [(56, 7), (63, 4)]


def test_bitmaps_are_shared_only_where_they_save_words():
    three, four, seven, twelve, fourteen = (HistorySpec(365 * DAY, days * DAY) for days in (3, 4, 7, 12, 14))
    layout = bitmaps([three, four, seven, twelve, fourteen])  # the example project's
    # 12 days from 4 (groups of 3: still 63 a word), not from 3 (groups of 4: 60 a word, 3 words for 121 windows)
    assert (layout[twelve].base, layout[twelve].per, layout[four].bits) == (four, 3, 63)
    assert (layout[fourteen].base, layout[fourteen].per, layout[seven].bits) == (seven, 2, 62)
    assert {layout[spec].base for spec in layout} == {three, four, seven}
    # 32-day windows over three years take one word of their own; from 1-day windows they would
    # leave 32 a word: 35 words for 1,095 days instead of 18
    by_day, by_month = HistorySpec(1095 * DAY, DAY), HistorySpec(1095 * DAY, 32 * DAY)
    assert bitmaps([by_day, by_month])[by_month] == Bitmap(by_month, 1, 63)
    assert bitmaps([by_day, HistorySpec(1095 * DAY, 21 * DAY)])[HistorySpec(1095 * DAY, 21 * DAY)] == Bitmap(by_day, 21, 63)
    nine_day, over_a_week = HistorySpec(365 * DAY, 9 * DAY), HistorySpec(365 * DAY, 8 * DAY)
    assert {layout.base for layout in bitmaps([nine_day, over_a_week]).values()} == {nine_day, over_a_week}  # neither divides


def test_a_bitmap_counts_groups_of_bits():
    bitmap = Bitmap(HistorySpec(30 * DAY, DAY), per=3, bits=63)
    words = [np.array([0b000_101_000_110, 0, 2**62, 0b111 << 27], dtype=np.uint64)]
    # groups of 3 bits: 2 set; none; bit 62 is the base's 63rd window, past the spec's 10 windows; group 9 only
    assert bitmap.count(words, windows=10).tolist() == [2, 0, 0, 1]
    assert bitmap.count(words, windows=21).tolist() == [2, 0, 1, 1]


def test_the_query_returns_windows_as_bitmaps(project, project_dir, request):
    layout = bitmaps(SPECS)
    for dialect in ("duckdb", "postgres", "spark"):
        sql = history_query(project, dialect, SPECS, NOW)
        assert "DISTINCT" not in sql.upper()
        assert sql.upper().count("BIT_OR(") == sum(bitmap.words for spec, bitmap in layout.items() if bitmap.base == spec) == 11
    # A BIGINT is shifted (PostgreSQL and Spark would wrap an INT mod 32): the window's
    # condition as 0 or 1, cast to INT first (PostgreSQL casts no boolean to BIGINT).
    assert "SHIFTLEFT(CAST(CAST((" in history_query(project, "spark", SPECS, NOW)
    assert "AS INT) AS BIGINT) <<" in history_query(project, "postgres", SPECS, NOW)
    source = open_source("duckdb", project_dir / "data", request)
    try:
        table = source.query(history_query(project, "duckdb", SPECS, NOW)).to_pylist()
    finally:
        source.close()
    by_day, by_36_hours = (f"windows_{sorted(SPECS).index(spec)}" for spec in (HistorySpec(365 * DAY, DAY), HistorySpec(365 * DAY, 36 * HOUR)))
    assert not any(name.startswith(f"windows_{sorted(SPECS).index(HistorySpec(128 * DAY, 2 * DAY))}_") for name in table[0])  # counted from by_day
    every_day = next(row for row in table if row["customer_id"] == EVERY_DAY)
    assert [every_day[f"{by_day}_{w}"] for w in range(7)] == [2**56 - 1] * 6 + [2**29 - 1]  # bit k of word w: day 56w + k
    assert every_day[f"{by_36_hours}_0"] == 2**63 - 1  # every bit of a word: the largest BIGINT
    on_edges = next(row for row in table if row["customer_id"] == ON_EDGES)
    assert on_edges[f"{by_day}_1"] & 1 and on_edges[f"{by_day}_0"] >> 55 & 1  # 56 days ago exactly, and a second later
    assert on_edges[f"{by_36_hours}_1"] & 1 and on_edges[f"{by_36_hours}_0"] >> 62 & 1  # 63 windows of 36 hours ago, and a second later
    # Demo customers, not only the made-up ones, ordered in windows past the first word.
    assert sum(1 for row in table if row[f"{by_day}_1"]) > 100


def test_duckdb_history_equals_plain_python(on_duckdb, expected):
    assert set(on_duckdb) == set(SPECS)
    for spec in SPECS:
        assert_same(on_duckdb[spec], expected[spec])
    every_day = {spec: windows_of(on_duckdb[spec], EVERY_DAY) for spec in SPECS}
    assert every_day == {spec: spec.windows for spec in SPECS}  # every bit of every word set
    assert windows_of(on_duckdb[HistorySpec(30 * DAY, 7 * DAY)], FAR_BACK) == 0  # listed (the 365-day specs read it), nothing counted


def test_a_subset_of_customers(project, project_dir, expected, request):
    """Up to IN_LIST_LIMIT ids go into the query; more are kept after it; none gives nothing."""
    everyone = expected[SPECS[0]].customer_ids
    few = [int(i) for i in everyone[::7]] + [EVERY_DAY, ON_EDGES, 12345678]  # and one with no orders
    many = list(range(1, IN_LIST_LIMIT + 100)) + [EVERY_DAY]  # demo ids count from 1; some never ordered
    assert len(few) <= IN_LIST_LIMIT < len(many)
    source = open_source("duckdb", project_dir / "data", request)
    try:
        for ids in (few, many):
            got = load_history(project, source, SPECS, ids, NOW)
            for spec in SPECS:
                want = expected[spec]
                keep = np.isin(want.customer_ids, ids)
                assert_same(got[spec], CustomerHistory(spec, *(array[keep] for array in (
                    want.customer_ids, want.orders, want.revenue, want.items, want.windows))))
        nobody = load_history(project, source, SPECS, [], NOW)
        assert all(len(history.customer_ids) == len(history.windows) == 0 for history in nobody.values())
    finally:
        source.close()


@pytest.mark.parametrize("name", [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])])
def test_postgres_and_spark_give_what_duckdb_gives(name, project, project_dir, on_duckdb, expected, request):
    source = open_source(name, project_dir / "data", request)
    try:
        got = load_history(project, source, SPECS, None, NOW)
    finally:
        source.close()
    for spec in SPECS:
        assert_same(got[spec], on_duckdb[spec])
        assert_same(got[spec], expected[spec])
