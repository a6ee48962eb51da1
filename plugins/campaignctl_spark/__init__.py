"""Built-in campaignctl plugin: spark.

A data source over Apache Spark SQL (``plugin: spark``) for data too big for
one DuckDB process. Tables are files in the same layout the DuckDB source
reads, one temporary view per table:

  <path>/<table>.parquet, <path>/<table>/*.parquet, <path>/<table>.csv

Project options:
  path:   the data directory, relative to the project directory (required)
  master: Spark master URL (default ``local[2]``)
  conf:   extra Spark settings, {key: value}

The session time zone is always UTC: the same segment SQL runs on DuckDB and
PostgreSQL too, and a timestamp literal must mean the same instant everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from campaignctl.contracts import unknown_options
from campaignctl.hookspecs import hookimpl

if TYPE_CHECKING:  # Spark hands back Arrow; importing it early would slow every command
    import pyarrow as pa

__version__ = "0.1.0"

TIMEZONE_KEY = "spark.sql.session.timeZone"
_DEFAULT_CONF = {
    TIMEZONE_KEY: "UTC",
    "spark.ui.showConsoleProgress": "false",
    # toArrow() and toPandas() hand Arrow batches straight from the JVM.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
_VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SparkSourceError(RuntimeError):
    """The Spark data source is misconfigured or a query failed."""


def data_files(path: Path) -> dict[str, tuple[str, Path]]:
    """Tables in a data directory: name -> (format, file or directory)."""
    found: dict[str, tuple[str, Path]] = {}
    seen: dict[str, Path] = {}  # lower-cased name -> entry: Spark view names ignore case
    for entry in sorted(path.iterdir()):
        if entry.is_file() and entry.suffix in (".parquet", ".csv"):
            name, fmt = entry.stem, entry.suffix[1:]
        elif entry.is_dir() and any(entry.glob("*.parquet")):
            name, fmt = entry.name, "parquet"
        else:
            continue
        if not _VIEW_NAME.match(name):
            continue  # not a table name a query could reference
        if name.lower() in seen:
            raise SparkSourceError(f"spark data source: table {name!r} is present twice in {path}: {seen[name.lower()].name} and {entry.name}")
        seen[name.lower()] = entry
        found[name] = (fmt, entry)
    return found


class SparkSource:
    """The DataSource protocol over Spark SQL. The JVM starts on first use, not in
    the constructor: validating a project must not cost a Spark startup."""

    dialect = "spark"

    def __init__(self, path: Path, *, master: str = "local[2]", conf: Mapping[str, str] | None = None):
        self.path = path
        self.master = master
        self.conf = {**_DEFAULT_CONF, **{str(k): str(v) for k, v in (conf or {}).items()}}
        if self.conf[TIMEZONE_KEY] != "UTC":
            raise SparkSourceError(f"spark data source: {TIMEZONE_KEY} must be UTC (segment SQL compares timestamps as UTC on every engine)")
        if not path.is_dir():
            raise SparkSourceError(f"spark data source: data directory {path} does not exist")
        self._files = data_files(path)
        self._session = None
        self._views: set[str] = set()
        self._owns_context = False

    def __repr__(self) -> str:
        return f"SparkSource(path={str(self.path)!r}, master={self.master!r})"

    def _spark(self, tables: Iterable[str] = ()):
        """This source's SparkSession, with temp views for ``tables``. Views are
        made on first use: reading a table's schema runs a Spark job (several for
        CSV type inference), and most queries touch few of the tables."""
        if self._session is None:
            self._session = self._start()
        if "*" in tables:
            tables = list(self._files)
        for table in tables:
            name = self._name(table)
            if name is not None and name not in self._views:
                fmt, location = self._files[name]
                self._read(fmt, location).createOrReplaceTempView(name)
                self._views.add(name)
        return self._session

    def _name(self, table: str) -> str | None:
        """The data file's spelling of ``table`` (Spark view names ignore case)."""
        return next((name for name in self._files if name.lower() == table.lower()), None)

    def _start(self):
        from pyspark.sql import SparkSession

        # An already running session (another source, a notebook, the test
        # fixture) is reused, since one JVM per process is all Spark allows; but
        # through newSession(), so our temp views and SQL settings stay ours.
        # Only a context we started is stopped by close().
        self._owns_context = SparkSession.getActiveSession() is None
        builder = SparkSession.builder.master(self.master).appName("campaignctl")
        for key, value in self.conf.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate().newSession()
        for key, value in self.conf.items():
            if session.conf.isModifiable(key):
                session.conf.set(key, value)
        return session

    def _read(self, fmt: str, location: Path):
        reader = self._session.read
        if fmt == "csv":
            # Types inferred from the data, as DuckDB's read_csv does; a real
            # deployment should prefer Parquet, whose types are declared.
            return reader.csv(str(location), header=True, inferSchema=True)
        return reader.parquet(str(location))

    def table_columns(self, table: str) -> list[str] | None:
        name = self._name(table)
        if name is None:
            return None
        return list(self._spark([name]).table(name).columns)

    def query(self, sql: str) -> pa.Table:
        from pyspark.errors import PySparkException

        try:
            return self._spark(_referenced_tables(sql)).sql(sql).toArrow()
        except PySparkException as exc:
            raise SparkSourceError(f"Spark query failed: {exc}") from exc

    def close(self) -> None:
        if self._session is None:
            return
        for name in self._views:
            self._session.catalog.dropTempView(name)
        self._views.clear()
        if self._owns_context:
            self._session.sparkContext.stop()
        self._session = None


def _referenced_tables(sql: str) -> set[str]:
    """Names of the tables ``sql`` reads (CTE names too; unknown names are ignored).
    Unparsable SQL references every table, and Spark reports the real error."""
    import sqlglot
    from sqlglot import exp

    try:
        return {table.name for table in sqlglot.parse_one(sql, read="spark").find_all(exp.Table)}
    except sqlglot.errors.ParseError:
        return {"*"}


_OPTIONS = ("path", "master", "conf")


def create_source(config, project_root: Path) -> SparkSource:
    """The factory registered as ``spark``."""
    options: dict[str, Any] = dict(config.options)
    if problem := unknown_options(options, _OPTIONS, "spark data source"):
        raise SparkSourceError(problem)
    if not options.get("path"):
        raise SparkSourceError("spark data source: option 'path' (the data directory) is required")
    conf = options.get("conf") or {}
    if not isinstance(conf, Mapping):
        raise SparkSourceError("spark data source: option 'conf' must be a mapping of Spark settings")
    path = Path(project_root) / str(options["path"])
    return SparkSource(path, master=str(options.get("master") or "local[2]"), conf=conf)


@hookimpl
def register_data_sources(register) -> None:
    register("spark", create_source)


__all__ = ["SparkSource", "SparkSourceError", "create_source", "data_files", "register_data_sources"]
