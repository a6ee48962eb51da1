"""The DuckDB data source (see the package docstring)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import duckdb
import pyarrow

from campaignctl.contracts import unknown_options
from campaignctl.model import DataSourceConfig


class DataSourceError(Exception):
    """The data source options point at nothing usable."""


class DuckDBSource:
    dialect = "duckdb"

    def __init__(self, connection: duckdb.DuckDBPyConnection):
        self.connection = connection

    @classmethod
    def from_config(cls, config: DataSourceConfig, root: Path) -> "DuckDBSource":
        options = config.options
        if problem := unknown_options(options, ("path", "database", "threads", "memory_limit"), f"{config.location}: duckdb data source"):
            raise DataSourceError(problem)
        if ("path" in options) == ("database" in options):
            raise DataSourceError(f"{config.location}: the duckdb data source needs exactly one of the options `path` (a directory of Parquet/CSV files) or `database` (a .duckdb file)")
        if "database" in options:
            database = root / str(options["database"])
            if not database.is_file():
                raise DataSourceError(f"{config.location}: no DuckDB database at {database}; check data_source.options.database")
            connection = duckdb.connect(str(database), read_only=True)
        else:
            connection = duckdb.connect()
        _configure(connection, options)
        if "path" in options:
            _attach_files(connection, root / str(options["path"]), config)
        return cls(connection)

    def table_columns(self, table: str) -> list[str] | None:
        rows = self.connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE lower(table_name) = lower(?) ORDER BY ordinal_position", [table]
        ).fetchall()
        return [name for (name,) in rows] or None

    def query(self, sql: str) -> pyarrow.Table:
        return self.connection.sql(sql).to_arrow_table()

    @contextmanager
    def beside_python(self) -> Iterator[None]:
        """One thread fewer while the queries run beside CPU-bound Python (the
        contracts.InProcessEngine protocol). At 1M customers on two cores the
        order history read beside the planner: the planning took ~0.15 s less
        with one engine thread than with two (docs/benchmarks.md)."""
        ((threads,),) = self.connection.execute("SELECT current_setting('threads')").fetchall()
        if int(threads) < 2:
            yield
            return
        self.connection.execute(f"SET threads = {int(threads) - 1}")
        try:
            yield
        finally:
            self.connection.execute(f"SET threads = {int(threads)}")

    def close(self) -> None:
        self.connection.close()


def _configure(connection: duckdb.DuckDBPyConnection, options: Mapping[str, Any]) -> None:
    # Like the PostgreSQL and Spark sources: a timestamp without a zone means
    # UTC whatever the machine's zone, so every engine answers the same.
    connection.execute("SET TimeZone = 'UTC'")
    threads = int(options["threads"]) if "threads" in options else _usable_cpus()
    connection.execute(f"SET threads = {threads}")
    if "memory_limit" in options:
        connection.execute(f"SET memory_limit = {_quote(str(options['memory_limit']))}")


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: honours taskset/cpusets
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _attach_files(connection: duckdb.DuckDBPyConnection, directory: Path, config: DataSourceConfig) -> None:
    if not directory.is_dir():
        raise DataSourceError(f"{config.location}: data directory {directory} does not exist; check data_source.options.path (relative to the project)")
    for name, reader in _table_files(directory).items():
        connection.execute(f"CREATE VIEW {_identifier(name)} AS SELECT * FROM {reader}")


def _table_files(directory: Path) -> dict[str, str]:
    """Physical table name -> the DuckDB table function reading it."""
    tables: dict[str, str] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and any(entry.glob("*.parquet")):
            tables[entry.name] = f"read_parquet({_quote(str(entry / '*.parquet'))})"
        elif entry.suffix == ".parquet":
            tables[entry.stem] = f"read_parquet({_quote(str(entry))})"
        elif entry.suffix == ".csv":
            tables.setdefault(entry.stem, f"read_csv({_quote(str(entry))}, header = true)")
    return tables


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
