"""The Spark data source: file layout, options, its session handling. Values and
types across engines are checked by the contract harness (tests/contract)."""

from __future__ import annotations

import datetime as dt
from types import MappingProxyType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from campaignctl_spark import SparkSource, SparkSourceError, create_source, data_files

from campaignctl.model import DataSourceConfig
from campaignctl.plugins import registry

pytestmark = pytest.mark.spark


def write_layout(root):
    """All three layouts, plus files that are not tables."""
    root.mkdir(exist_ok=True)
    pq.write_table(pa.table({"customer_id": [1, 2], "city": ["Moscow", None]}), root / "customers.parquet")
    (root / "orders").mkdir()
    pq.write_table(pa.table({"order_id": [1], "customer_id": [1]}), root / "orders" / "part-0.parquet")
    pq.write_table(pa.table({"order_id": [2], "customer_id": [2]}), root / "orders" / "part-1.parquet")
    (root / "stores.csv").write_text("store_id,name,opened\n1,Aviapark,2020-01-31\n2,\"Mega, North\",\n")
    (root / "notes.txt").write_text("not a table")
    (root / "empty_dir").mkdir()
    (root / "bad-name.parquet").write_bytes(b"")  # not a name a query could use
    return root


def test_registered_through_the_entry_point():
    assert registry().data_sources["spark"] is create_source


def test_data_files_finds_the_three_layouts(tmp_path):
    found = data_files(write_layout(tmp_path / "data"))
    assert {name: fmt for name, (fmt, _) in found.items()} == {"customers": "parquet", "orders": "parquet", "stores": "csv"}


def test_a_table_present_twice_is_refused(tmp_path):
    data = write_layout(tmp_path / "data")
    pq.write_table(pa.table({"x": [1]}), data / "Orders.parquet")  # view names ignore case
    with pytest.raises(SparkSourceError, match="present twice"):
        data_files(data)


def test_options_are_checked_before_spark_starts(tmp_path):
    def make(**options):
        return create_source(DataSourceConfig("spark", MappingProxyType(options)), tmp_path)

    with pytest.raises(SparkSourceError, match="'path'.*required"):
        make()
    with pytest.raises(SparkSourceError, match="unknown option.*dsn"):
        make(path="data", dsn="x")
    with pytest.raises(SparkSourceError, match="does not exist"):
        make(path="nowhere")
    write_layout(tmp_path / "data")
    with pytest.raises(SparkSourceError, match="must be UTC"):
        make(path="data", conf={"spark.sql.session.timeZone": "Europe/Moscow"})
    # Construction alone never starts the JVM: validating a project stays fast.
    assert make(path="data", master="local[1]")._session is None


def test_tables_from_every_layout_are_queryable(spark, spark_conf, tmp_path):
    write_layout(tmp_path / "data")
    source = create_source(DataSourceConfig("spark", MappingProxyType({"path": "data", "conf": spark_conf})), tmp_path)
    try:
        assert source.dialect == "spark"
        assert source.table_columns("orders") == ["order_id", "customer_id"]
        assert source.table_columns("stores") == ["store_id", "name", "opened"]
        assert source.table_columns("notes") is None
        assert source.query("SELECT order_id FROM orders ORDER BY order_id").column("order_id").to_pylist() == [1, 2]
        stores = source.query("SELECT * FROM stores ORDER BY store_id")
        assert stores.to_pylist() == [
            {"store_id": 1, "name": "Aviapark", "opened": dt.date(2020, 1, 31)},
            {"store_id": 2, "name": "Mega, North", "opened": None},
        ]
        with pytest.raises(SparkSourceError, match="no_such_table"):
            source.query("SELECT * FROM no_such_table")
    finally:
        source.close()


def test_sources_share_the_jvm_but_not_their_tables(spark, spark_conf, tmp_path):
    """Two sources in one process (one JVM) each see only their own views, run
    in UTC, and closing them leaves the running session alone."""
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir(), second_dir.mkdir()
    pq.write_table(pa.table({"x": [1]}), first_dir / "only_in_a.parquet")
    pq.write_table(pa.table({"x": [2]}), second_dir / "only_in_b.parquet")
    first, second = SparkSource(first_dir, conf=spark_conf), SparkSource(second_dir, conf=spark_conf)
    try:
        assert first.query("SELECT x FROM only_in_a").to_pylist() == [{"x": 1}]
        with pytest.raises(SparkSourceError):
            second.query("SELECT x FROM only_in_a")
        ts = second.query("SELECT CAST('2026-01-01 10:00:00+03:00' AS TIMESTAMP) AS ts").column("ts")
        assert ts.type == pa.timestamp("us", tz="UTC")
        assert ts.to_pylist() == [dt.datetime(2026, 1, 1, 7, tzinfo=dt.timezone.utc)]
    finally:
        first.close()
        second.close()
    assert spark.sql("SELECT 1 AS one").collect()[0].one == 1  # the shared session survived
