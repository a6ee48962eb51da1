"""Data-quality checks: the same dirty data gives the same issues on every
source, clean data gives none, and `campaignctl data check` reports them."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import pyarrow as pa
import pytest
from click.testing import CliRunner
from contract import dataset
from contract.harness import SOURCES, open_source

from campaignctl.dataquality import DataIssue, check_data, has_errors
from campaignctl.model import DataSourceConfig, PluginConfig, Policies, Project, TableMapping

_MARKS = {"postgres": [pytest.mark.postgres], "spark": [pytest.mark.spark, pytest.mark.slow]}


def project(root: Path, timezone_name: str = "Europe/Moscow", tables=None) -> Project:
    """The smallest Project check_data needs: time zone and table mapping."""
    return Project(
        root=root, name="dq", timezone=timezone_name, currency="RUB",
        data_source=DataSourceConfig("any", MappingProxyType({}), tables=MappingProxyType(tables or {})),
        state_store=PluginConfig("sqlite"), channels=MappingProxyType({}), policies=Policies(),
    )


def _append(table: pa.Table, *rows: dict) -> pa.Table:
    return pa.concat_tables([table, pa.Table.from_pylist(list(rows), schema=table.schema)])


def _set(table: pa.Table, row: int, **values) -> pa.Table:
    records = table.to_pylist()
    records[row].update(values)
    return pa.Table.from_pylist(records, schema=table.schema)


def dirty_tables() -> dict[str, pa.Table]:
    """The contract data set with one of each problem planted, and a few
    near-misses that must not be reported."""
    t = dataset.build()
    future_local = dataset.LOCAL_NOW + timedelta(days=2)
    customer = t["customers"].to_pylist()[9]
    t["customers"] = _append(
        t["customers"],
        {**customer},  # duplicate customer_id 10
        {**customer, "customer_id": None, "email": "ghost@example.com"},
        {**customer, "customer_id": 900, "loyalty_tier": "platinum",
         "created_at": dataset.NOW + timedelta(hours=1)},  # zoned: an instant one hour ahead -> future
    )
    t["consents"] = _append(
        t["consents"],
        {"customer_id": 1, "channel": "fax", "status": "granted", "updated_at": dataset.LOCAL_NOW},
        {"customer_id": 2, "channel": "email", "status": "pending", "updated_at": None},
    )
    order = t["orders"].to_pylist()[0]
    t["orders"] = _append(
        t["orders"],
        {**order, "order_id": 1},  # duplicated below
        {**order, "order_id": 1},
        {**order, "order_id": 2, "total": Decimal("-10.00"), "status": "completed"},
        {**order, "order_id": 3, "total": Decimal("-10.00"), "status": "returned"},  # a return: fine
        {**order, "order_id": 4, "customer_id": 99999},
        {**order, "order_id": 5, "customer_id": None},
        {**order, "order_id": 6, "status": "refunded"},
        {**order, "order_id": 7, "ts": future_local},
        # Wall clock 13:00 when now is 12:00 UTC = 15:00 in Moscow: not in the future there.
        {**order, "order_id": 8, "ts": dataset.LOCAL_NOW + timedelta(hours=1)},
        {**order, "order_id": 9, "channel": "telepathy"},
    )
    t["orders"] = _set(t["orders"], 0, items=t["orders"].column("items")[0].as_py() + 1)
    event = t["events"].to_pylist()[0]
    t["events"] = _append(t["events"], {**event, "type": "wishlist_added"}, {**event, "ts": future_local})
    return t


# (table, column, problem, count, severity), as every source must report them.
EXPECTED = [
    ("customers", "customer_id", "null", 1, "error"),
    ("customers", "customer_id", "duplicate_id", 2, "error"),
    ("customers", "loyalty_tier", "unknown_value", 1, "warning"),
    ("customers", "created_at", "future_timestamp", 1, "warning"),
    ("consents", "updated_at", "null", 1, "error"),
    ("consents", "channel", "unknown_value", 1, "error"),
    ("consents", "status", "unknown_value", 1, "error"),
    ("orders", "order_id", "duplicate_id", 2, "error"),
    ("orders", "customer_id", "null", 1, "warning"),
    ("orders", "status", "unknown_value", 1, "error"),
    ("orders", "channel", "unknown_value", 1, "warning"),
    ("orders", "ts", "future_timestamp", 1, "warning"),
    ("orders", "total", "negative_total", 1, "error"),
    ("orders", "customer_id", "unknown_customer", 1, "warning"),
    ("orders", "items", "items_mismatch", 1, "warning"),
    ("events", "type", "unknown_value", 1, "warning"),
    ("events", "ts", "future_timestamp", 1, "warning"),
]


def summary(issues: list[DataIssue]) -> list[tuple]:
    return [(i.table, i.column, i.problem, i.count, i.severity) for i in issues]


@pytest.fixture(scope="module")
def dirty_dir(tmp_path_factory) -> Path:
    return dataset.write(dirty_tables(), tmp_path_factory.mktemp("dirty") / "data")


@pytest.fixture(scope="module", params=[pytest.param(name, marks=_MARKS.get(name, [])) for name in SOURCES])
def dirty_source(request, dirty_dir):
    opened = open_source(request.param, dirty_dir, request)
    yield opened
    opened.close()


def test_the_same_issues_on_every_source(dirty_source, dirty_dir):
    issues = check_data(project(dirty_dir.parent), dirty_source, now=dataset.NOW)
    assert summary(issues) == EXPECTED
    assert has_errors(issues)
    by_problem = {(i.table, i.column, i.problem): i for i in issues}
    # Examples name the failing rows: the offending value, or the row's id.
    assert by_problem["orders", "status", "unknown_value"].examples == ("refunded",)
    assert by_problem["orders", "total", "negative_total"].examples == ("2",)
    assert by_problem["customers", "customer_id", "null"].examples == ("ghost@example.com",)


@pytest.mark.postgres
def test_clean_data_has_no_issues(tmp_path, request):
    source = open_source("postgres", dataset.write(dataset.build(), tmp_path / "data"), request)
    try:
        assert check_data(project(tmp_path), source, now=dataset.NOW) == []
    finally:
        source.close()


@pytest.mark.postgres
def test_mapped_names_and_missing_tables(tmp_path, request):
    """Checks follow data_source.tables to physical names; a missing table is
    one issue (an error only for customers and orders), not a crash."""
    tables = dataset.build()
    orders = tables.pop("orders")
    tables["sales"] = orders.rename_columns([{"order_id": "id", "ts": "created"}.get(c, c) for c in orders.column_names])
    tables["sales"] = _set(tables["sales"], 3, status="lost")
    del tables["events"]
    source = open_source("postgres", dataset.write(tables, tmp_path / "data"), request)
    mapping = {"orders": TableMapping("sales", MappingProxyType({"order_id": "id", "ts": "created"}))}
    try:
        issues = check_data(project(tmp_path, tables=mapping), source, now=dataset.NOW)
    finally:
        source.close()
    assert summary(issues) == [
        ("orders", "status", "unknown_value", 1, "error"),
        ("events", None, "missing_table", 0, "warning"),
    ]
    assert issues[0].examples == ("lost",)


# --------------------------------------------------------------------------- the command


PROJECT_YAML = """\
version: 1
name: dq
timezone: Europe/Moscow
currency: RUB
data_source:
  plugin: postgres
  options: {dsn: "${env:DQ_TEST_DSN}", schema: %s}
channels:
  email: {plugin: outbox, kind: email, cost: 0.1, options: {path: out/email.jsonl}}
"""


def _command_project(directory: Path, schema: str) -> Path:
    directory.mkdir()
    (directory / "campaignctl.yaml").write_text(PROJECT_YAML % schema)
    return directory


def _run(project_dir: Path, dsn: str, *args: str):
    from campaignctl.cli import cli

    return CliRunner().invoke(
        cli, ["-C", str(project_dir), "data", "check", "--now", dataset.NOW.isoformat(), *args],
        env={"DQ_TEST_DSN": dsn}, catch_exceptions=False,
    )


@pytest.mark.postgres
def test_data_check_command(postgres_dsn, tmp_path):
    from campaignctl_postgres import load_parquet_dir

    dirty = dataset.write(dirty_tables(), tmp_path / "dirty")
    clean = dataset.write(dataset.build(), tmp_path / "clean")
    load_parquet_dir(postgres_dsn, dirty, "dq_dirty")
    load_parquet_dir(postgres_dsn, clean, "dq_clean")

    dirty_project = _command_project(tmp_path / "p1", "dq_dirty")
    result = _run(dirty_project, postgres_dsn, "--format", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [(i["table"], i["column"], i["problem"], i["count"], i["severity"]) for i in report["issues"]] == EXPECTED

    text = _run(dirty_project, postgres_dsn)
    assert text.exit_code == 1
    assert "error: orders.status: value outside the data contract's allowed values: 1 row (e.g. refunded)" in text.output

    ok = _run(_command_project(tmp_path / "p2", "dq_clean"), postgres_dsn)
    assert ok.exit_code == 0, ok.output
    assert "no data issues found" in ok.output


@pytest.mark.postgres
def test_data_check_never_shows_the_password(tmp_path):
    result = _run(_command_project(tmp_path / "p", "public"), "host=127.0.0.1 port=1 user=x password=s3cr3t-pw dbname=x")
    assert result.exit_code == 1
    assert "cannot connect" in result.output
    assert "s3cr3t-pw" not in result.output


def test_issue_rendering():
    issue = DataIssue("orders", "status", "unknown_value", 3, ("refunded", "lost"), "error")
    assert str(issue) == "error: orders.status: value outside the data contract's allowed values: 3 row(s) (e.g. refunded, lost)"
    assert issue.to_json()["examples"] == ["refunded", "lost"]
    assert not has_errors([DataIssue("events", "type", "unknown_value", 1, severity="warning")])
