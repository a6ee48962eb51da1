"""The built-in DuckDB data source: files become views, the contract is checked
against them, and the project's table/column mapping is honoured."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from campaignctl_duckdb import DataSourceError, DuckDBSource

from campaignctl import plugins
from campaignctl.contracts import InProcessEngine
from campaignctl.datacontract import CONTRACT, check_source
from campaignctl.diagnostics import Location
from campaignctl.model import DataSourceConfig, TableMapping

WHERE = Location("campaignctl.yaml", 7, 3)


def contract_table(table: str, rename: dict[str, str] | None = None, drop: str | None = None) -> pa.Table:
    columns = {(rename or {}).get(name, name): [None] for name in CONTRACT[table] if name != drop}
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def write_contract(directory: Path, skip: tuple[str, ...] = ()) -> None:
    for table in CONTRACT:
        if table not in skip:
            pq.write_table(contract_table(table), directory / f"{table}.parquet")


def test_parquet_files_directories_and_csv_become_views(tmp_path):
    pq.write_table(pa.table({"customer_id": [1, 2]}), tmp_path / "customers.parquet")
    (tmp_path / "orders").mkdir()
    for part in range(2):
        pq.write_table(pa.table({"order_id": [part], "customer_id": [1]}), tmp_path / "orders" / f"part-{part:05d}.parquet")
    (tmp_path / "stores.csv").write_text("store_id,mall\n1,Mega\n")
    source = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": tmp_path.name, "threads": 1, "memory_limit": "512MB"}), tmp_path.parent)
    assert source.table_columns("orders") == ["order_id", "customer_id"]
    assert source.table_columns("stores") == ["store_id", "mall"]
    assert source.table_columns("missing") is None
    assert source.query("SELECT count(*) AS n FROM orders").to_pylist() == [{"n": 2}]
    source.close()


def test_beside_python_leaves_a_core_and_gives_it_back(tmp_path):
    pq.write_table(pa.table({"customer_id": [1, 2]}), tmp_path / "customers.parquet")

    def threads(source: DuckDBSource) -> int:
        return int(source.query("SELECT current_setting('threads') AS n").column("n")[0].as_py())

    for configured, beside in ((4, 3), (2, 1), (1, 1)):
        source = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": tmp_path.name, "threads": configured}), tmp_path.parent)
        assert isinstance(source, InProcessEngine)
        with source.beside_python():
            assert threads(source) == beside
            assert source.query("SELECT count(*) AS n FROM customers").to_pylist() == [{"n": 2}]
        assert threads(source) == configured
        with pytest.raises(RuntimeError), source.beside_python():
            raise RuntimeError("a failed query")
        assert threads(source) == configured  # given back whatever happened inside
        source.close()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DataSourceError, match=r"campaignctl.yaml:7:3: data directory .*nowhere does not exist"):
        DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": "nowhere"}, WHERE), tmp_path)
    with pytest.raises(DataSourceError, match="exactly one of the options `path`"):
        DuckDBSource.from_config(DataSourceConfig("duckdb", {}, WHERE), tmp_path)


def test_contract_check_reports_every_missing_table_and_column_with_the_mapping_to_fix_it(tmp_path):
    write_contract(tmp_path, skip=("events", "orders"))
    pq.write_table(contract_table("orders", drop="ts"), tmp_path / "sales.parquet")
    config = DataSourceConfig("duckdb", {"path": "."}, WHERE, tables={"orders": TableMapping("sales")})
    source = DuckDBSource.from_config(config, tmp_path)
    problems = check_source(config, source)
    assert [d.location for d in problems] == [WHERE, WHERE]
    column, table = problems  # in the contract's order: orders before events
    assert "no table 'events'" in table.message and "data_source.tables.events.table" in table.hint
    assert "table 'sales' (logical table 'orders') has no column 'ts'" in column.message
    assert "order_id" in column.message  # what is there
    assert column.hint == "map it with data_source.tables.orders.columns.ts in campaignctl.yaml"


def test_renamed_tables_and_columns_satisfy_the_contract(tmp_path):
    write_contract(tmp_path, skip=("orders",))
    pq.write_table(contract_table("orders", rename={"ts": "created_at"}), tmp_path / "sales.parquet")
    config = DataSourceConfig("duckdb", {"path": "."}, WHERE, tables={"orders": TableMapping("sales", {"ts": "created_at"})})
    assert check_source(config, DuckDBSource.from_config(config, tmp_path)) == []


def test_registered_through_the_entry_point(tmp_path):
    plugins.reset()
    source = plugins.registry().data_sources["duckdb"](DataSourceConfig("duckdb", {"path": "."}, WHERE), tmp_path)
    try:
        assert isinstance(source, DuckDBSource)
        # A timestamp without a zone means UTC whatever the machine's zone, as on PostgreSQL and Spark.
        assert source.query("SELECT current_setting('TimeZone') AS zone").column("zone").to_pylist() == ["UTC"]
    finally:
        source.close()
