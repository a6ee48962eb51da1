"""Built-in campaignctl plugin: postgres.

A data source over PostgreSQL (``plugin: postgres``), and ``load_parquet_dir``,
which loads a directory of Parquet files (the demo data) into PostgreSQL.

Project options:
  dsn:    libpq connection string or URL (usually ``${env:...}``; required)
  schema: schema holding the contract tables (default ``public``)

The DSN may carry a password, so it never appears in a log line or an error
message: connection errors are re-raised with the password scrubbed and
without the original exception chained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from campaignctl.hookspecs import hookimpl

# The source's code (psycopg, pyarrow) is imported on first use: loading
# plugins must stay cheap for commands that never touch PostgreSQL.
_EXPORTS = {"PostgresSource", "PostgresSourceError", "connect", "create_source", "load_parquet_dir", "parquet_tables", "sql_type"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from . import source

        return getattr(source, name)
    raise AttributeError(name)


def _create_source(config, project_root: Path):
    from .source import create_source

    return create_source(config, project_root)


@hookimpl
def register_data_sources(register) -> None:
    register("postgres", _create_source)
