"""The PostgreSQL data source and loader, against a real PostgreSQL 15 server
(the ``postgres_dsn`` fixture). The contract every source meets is in
tests/contract; this file covers what is PostgreSQL's own: its type system,
COPY in both directions, the read-only session and secrets in the DSN."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import MappingProxyType

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from campaignctl_postgres import PostgresSource, PostgresSourceError, create_source, load_parquet_dir

from campaignctl.model import DataSourceConfig
from campaignctl.plugins import registry

pytestmark = pytest.mark.postgres


@pytest.fixture
def source(postgres_dsn, postgres_schema):
    opened = PostgresSource(postgres_dsn, schema=postgres_schema)
    yield opened
    opened.close()


def execute(dsn: str, schema: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        for statement in statements:
            conn.execute(statement)


def test_registered_through_the_entry_point(postgres_dsn, postgres_schema, tmp_path):
    execute(postgres_dsn, postgres_schema, "CREATE TABLE customers (customer_id bigint)")
    config = DataSourceConfig("postgres", MappingProxyType({"dsn": postgres_dsn, "schema": postgres_schema}))
    opened = registry().data_sources["postgres"](config, tmp_path)
    try:
        assert isinstance(opened, PostgresSource) and opened.table_columns("customers") == ["customer_id"]
    finally:
        opened.close()


def test_factory_options(postgres_dsn, postgres_schema, tmp_path):
    execute(postgres_dsn, postgres_schema, "CREATE TABLE customers (customer_id bigint)")
    config = DataSourceConfig("postgres", MappingProxyType({"dsn": postgres_dsn, "schema": postgres_schema}))
    opened = create_source(config, tmp_path)
    try:
        assert opened.dialect == "postgres"
        assert opened.table_columns("customers") == ["customer_id"]
    finally:
        opened.close()
    with pytest.raises(PostgresSourceError, match="unknown option.*path"):
        create_source(DataSourceConfig("postgres", MappingProxyType({"dsn": postgres_dsn, "path": "data"})), tmp_path)
    with pytest.raises(PostgresSourceError, match="'dsn' is required"):
        create_source(DataSourceConfig("postgres", MappingProxyType({})), tmp_path)


def test_table_columns_only_see_the_configured_schema(postgres_dsn, postgres_schema, source):
    execute(postgres_dsn, "public", "CREATE TABLE IF NOT EXISTS public.elsewhere (x int)")
    execute(postgres_dsn, postgres_schema, "CREATE TABLE orders (order_id bigint, ts timestamp, total numeric(12,2))")
    assert source.table_columns("orders") == ["order_id", "ts", "total"]
    assert source.table_columns("elsewhere") is None
    assert source.table_columns("missing") is None


def test_every_common_type_arrives_as_its_arrow_type(source):
    result = source.query(
        """
        SELECT 1::smallint AS i2, 2::int AS i4, 3::bigint AS i8, 1.5::real AS f4, 2.25::float8 AS f8,
               12.30::numeric(12,2) AS money, 'x'::text AS t, 'y'::varchar(5) AS v, 'z'::char(2) AS c,
               true AS b, DATE '2024-02-29' AS d, TIME '23:59:59.5' AS tm,
               TIMESTAMP '2026-01-01 10:00:00.123456' AS ts, TIMESTAMPTZ '2026-01-01 10:00:00+03' AS tstz,
               '{"a": [1, 2]}'::jsonb AS js, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id
        """
    )
    assert result.schema.types == [
        pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.decimal128(12, 2), pa.string(), pa.string(),
        pa.string(), pa.bool_(), pa.date32(), pa.time64("us"), pa.timestamp("us"), pa.timestamp("us", tz="UTC"),
        pa.string(), pa.string(),
    ]
    row = result.to_pylist()[0]
    assert row["money"] == Decimal("12.30") and row["c"] == "z " and row["tm"] == dt.time(23, 59, 59, 500000)
    assert row["ts"] == dt.datetime(2026, 1, 1, 10, 0, 0, 123456)
    assert row["tstz"] == dt.datetime(2026, 1, 1, 7, tzinfo=dt.timezone.utc)  # the session is in UTC
    assert row["js"].replace(" ", "") == '{"a":[1,2]}' and row["id"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def test_null_empty_string_and_the_text_null_stay_apart(source):
    result = source.query("SELECT * FROM (VALUES (1, NULL), (2, ''), (3, 'NULL'), (4, 'NA'), (5, 'a,\"b\"\nc')) AS v(k, s)")
    assert result.column("s").to_pylist() == [None, "", "NULL", "NA", 'a,"b"\nc']


def test_bare_numeric_gets_the_scale_its_values_need(source):
    row = source.query("SELECT SUM(x) AS s, AVG(x) AS a, 1/3::numeric AS third FROM (VALUES (1.10::numeric(5,2)), (2.25)) AS v(x)").to_pylist()[0]
    assert row == {"s": Decimal("3.35"), "a": Decimal("1.675"), "third": Decimal("0.33333333333333333333")}


def test_types_copy_text_cannot_carry_take_the_row_path(source):
    """Arrays, intervals, bytea, 'infinity' and NaN: rarer, read row by row through psycopg."""
    row = source.query("SELECT ARRAY[1, 2] AS arr, INTERVAL '1 day' AS iv, '\\x0102'::bytea AS raw").to_pylist()[0]
    assert row == {"arr": [1, 2], "iv": dt.timedelta(days=1), "raw": b"\x01\x02"}
    assert source.query("SELECT 'NaN'::numeric AS n").column("n").type == pa.float64()
    # Arrow has no infinite timestamp: a clear error rather than a made-up date.
    with pytest.raises(PostgresSourceError, match="timestamp too large"):
        source.query("SELECT 'infinity'::timestamp AS ts")


def test_repeated_column_names_and_empty_results(source):
    repeated = source.query("SELECT 1 AS a, 2 AS a")
    assert repeated.column_names == ["a", "a"] and [c.to_pylist() for c in repeated.columns] == [[1], [2]]
    empty = source.query("SELECT 1::bigint AS n, now() AS at, 2.5::numeric(4,1) AS x WHERE false")
    assert empty.num_rows == 0
    assert empty.schema.types == [pa.int64(), pa.timestamp("us", tz="UTC"), pa.decimal128(4, 1)]


def test_a_large_result_streams_whole(source):
    result = source.query("SELECT g AS id, g * 0.01 AS amount, 'c' || g AS name FROM generate_series(1, 200000) AS g")
    assert result.num_rows == 200_000
    assert result.column("id").to_pylist()[-1] == 200_000


def test_the_session_is_read_only(postgres_dsn, postgres_schema, source):
    """Segment SQL only reads; a SELECT that writes (through a function) is refused by the server."""
    execute(postgres_dsn, postgres_schema, "CREATE SEQUENCE ids")
    with pytest.raises(PostgresSourceError, match="read-only transaction"):
        source.query("SELECT nextval('ids') AS id")
    assert source.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]  # still usable


def test_query_errors_name_the_problem(source):
    with pytest.raises(PostgresSourceError, match="no_such_table"):
        source.query("SELECT * FROM no_such_table")
    assert source.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]  # the failed transaction was ended


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 port=1 user=x password=hunter2secret dbname=x",  # nothing listens on port 1
        "postgresql://x:hunter2secret@127.0.0.1:1/x",
        "host=127.0.0.1 password=hunter2secret ret",  # malformed: libpq would quote the fragment
    ],
)
def test_the_password_never_appears_in_errors(dsn):
    with pytest.raises(PostgresSourceError) as info:
        PostgresSource(dsn)
    shown = f"{info.value} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
    assert "hunter2" not in shown


# --------------------------------------------------------------------------- load_parquet_dir


def test_load_parquet_dir_creates_typed_tables(postgres_dsn, postgres_schema, tmp_path):
    orders = pa.table({
        "order_id": pa.array([1, 2, 3], pa.int64()),
        "ts": pa.array([dt.datetime(2026, 1, 1, 10), None, dt.datetime(2026, 1, 2)], pa.timestamp("ns")),
        "created": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * 3, pa.timestamp("us", tz="UTC")),
        "day": pa.array([dt.date(2024, 2, 29)] * 3),
        "total": pa.array([Decimal("1.10"), Decimal("-2.00"), None], pa.decimal128(12, 2)),
        "status": pa.array(["completed", "returned", "completed"]).dictionary_encode(),
        "payload": pa.array([{"a": 1}, None, {"a": 2}]),
        "note": ["", None, "multi\nline, \"quoted\""],
    })
    (tmp_path / "orders").mkdir()
    pq.write_table(orders.slice(0, 2), tmp_path / "orders" / "part-0.parquet")
    pq.write_table(orders.slice(2), tmp_path / "orders" / "part-1.parquet")
    pq.write_table(pa.table({"customer_id": [1, 2]}), tmp_path / "customers.parquet")
    (tmp_path / "README.txt").write_text("not a table")

    assert load_parquet_dir(postgres_dsn, tmp_path, postgres_schema) == {"customers": 2, "orders": 3}
    assert load_parquet_dir(postgres_dsn, tmp_path, postgres_schema) == {"customers": 2, "orders": 3}  # replaces

    with psycopg.connect(postgres_dsn) as conn:
        types = dict(conn.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c"
            " JOIN pg_attribute a ON a.attrelid = (quote_ident(c.table_schema) || '.' || c.table_name)::regclass AND a.attname = c.column_name"
            " WHERE table_schema = %s AND table_name = 'orders'", (postgres_schema,)).fetchall())
    assert types == {
        "order_id": "bigint", "ts": "timestamp without time zone", "created": "timestamp with time zone", "day": "date",
        "total": "numeric(12,2)", "status": "text", "payload": "jsonb", "note": "text",
    }
    source = PostgresSource(postgres_dsn, schema=postgres_schema)
    try:
        back = source.query("SELECT order_id, ts, total, status, note, payload->>'a' AS a FROM orders ORDER BY order_id").to_pylist()
    finally:
        source.close()
    assert back == [
        {"order_id": 1, "ts": dt.datetime(2026, 1, 1, 10), "total": Decimal("1.10"), "status": "completed", "note": "", "a": "1"},
        {"order_id": 2, "ts": None, "total": Decimal("-2.00"), "status": "returned", "note": None, "a": None},
        {"order_id": 3, "ts": dt.datetime(2026, 1, 2), "total": None, "status": "completed", "note": 'multi\nline, "quoted"', "a": "2"},
    ]


def test_load_parquet_dir_refuses_an_empty_directory(postgres_dsn, tmp_path):
    with pytest.raises(PostgresSourceError, match="no <table>.parquet"):
        load_parquet_dir(postgres_dsn, tmp_path, "public")
