"""Built-in campaignctl plugin: duckdb, the embedded default data source.

Options (data_source.options in campaignctl.yaml):
- ``path``: a directory, relative to the project, holding per physical table
  ``<table>.parquet``, ``<table>/*.parquet`` or ``<table>.csv``; each becomes a view;
- ``database``: a .duckdb file instead (read only);
- ``threads``, ``memory_limit``: DuckDB settings. ``threads`` defaults to the
  CPUs this process may run on (DuckDB's own default counts the host's cores,
  which oversubscribes a container or a process pinned to fewer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from campaignctl.hookspecs import hookimpl

__version__ = "0.1.0"

# duckdb and pyarrow are imported on first use, not when plugins load.
_EXPORTS = {"DataSourceError", "DuckDBSource"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from . import source

        return getattr(source, name)
    raise AttributeError(name)


def _from_config(config, root: Path):
    from .source import DuckDBSource

    return DuckDBSource.from_config(config, root)


@hookimpl
def register_data_sources(register) -> None:
    register("duckdb", _from_config)
