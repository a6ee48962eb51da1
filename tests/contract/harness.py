"""Opening any data source on a directory of Parquet files, the way a project would.

Every source is created through ``campaignctl.plugins.registry()``, so the
harness exercises the entry points exactly as ``campaignctl`` does. What
differs per source is only how the files reach it: DuckDB and Spark read the
directory; PostgreSQL gets the files loaded into a fresh schema first.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from campaignctl.contracts import DataSource
from campaignctl.diagnostics import Location
from campaignctl.model import DataSourceConfig

SOURCES = ("duckdb", "postgres", "spark")


def config(plugin: str, options: dict[str, Any]) -> DataSourceConfig:
    return DataSourceConfig(plugin, MappingProxyType(options), Location("campaignctl.yaml"))


def options_for(name: str, data_dir: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The project options under which source ``name`` serves the files in ``data_dir``.
    Paths are given relative to the project root (data_dir's parent), as users write them."""
    if name == "postgres":
        from campaignctl_postgres import load_parquet_dir

        dsn = request.getfixturevalue("postgres_dsn")
        schema = f"data_{uuid.uuid4().hex[:10]}"  # a schema per data set: sources never see each other's tables
        load_parquet_dir(dsn, data_dir, schema)
        return {"dsn": dsn, "schema": schema}
    if name == "spark":
        request.getfixturevalue("spark")  # one JVM for the run; the source attaches to it
        return {"path": data_dir.name, "conf": request.getfixturevalue("spark_conf")}
    return {"path": data_dir.name}


def open_source(name: str, data_dir: Path, request: pytest.FixtureRequest) -> DataSource:
    """Data source ``name`` serving ``data_dir``, through the plugin registry as a project would get it."""
    from campaignctl.plugins import registry

    factory = registry().data_sources[name]
    return factory(config(name, options_for(name, data_dir, request)), data_dir.parent)
