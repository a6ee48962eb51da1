"""load_customer_facts on DuckDB over small Parquet files: contacts, latest
consent per channel (revoked wins a tie, a row without a status revokes),
order dates from completed orders only, the project's column mapping, and the
latest trigger events; and the same facts read with the segments
(facts_from_audiences) on demo data, on DuckDB and PostgreSQL (every source,
Spark too, on the contract data set: tests/contract/test_data_sources.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_apply import NOW as DEMO_NOW
from test_apply import demo_data, project_dir  # noqa: F401 - fixtures

from campaignctl.executor import needed_segments
from campaignctl.facts import FACT_COLUMNS, IN_LIST_LIMIT, SCHEMA, CustomerFacts, facts_from_audiences, facts_query, load_customer_facts
from campaignctl.model import DataSourceConfig
from campaignctl.plugins import registry
from campaignctl.project import load_project
from campaignctl.segments import evaluate_segments

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

PROJECT = """\
version: 1
name: shop
timezone: Europe/Moscow
currency: RUB
data_source:
  plugin: duckdb
  options: {path: data}
  tables:
    orders:
      table: sales
      columns: {ts: created_at}
channels:
  email: {plugin: outbox, kind: email, cost: 0.15}
"""

CAMPAIGNS = """\
version: 1
segments:
  everyone:
    where: {consent: email}
  texting:
    where: {consent: sms}
campaigns:
  cart:
    kind: triggered
    audience: everyone
    trigger: {event: cart_updated, delay: 1h, unless: [order, app_opened]}
    message: {channel: email, template: hello}
templates:
  hello:
    channel: email
    subject: Hello
    html: templates/hello.html
"""


def ts(days_ago: float) -> datetime:
    return NOW - timedelta(days=days_ago)


def write(directory, name, rows, schema):
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=schema), directory / f"{name}.parquet")


def project_with_data(tmp_path):
    (tmp_path / "campaignctl.yaml").write_text(PROJECT)
    (tmp_path / "campaigns.yaml").write_text(CAMPAIGNS)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/hello.html").write_text("<p>Hello</p>")
    data = tmp_path / "data"
    data.mkdir()
    t = pyarrow.timestamp("us", tz="UTC")
    write(data, "customers", [
        dict(customer_id=1, email="a@x", phone="+7900", push_token=None, web_push_endpoint=None, timezone="Asia/Omsk", created_at=ts(500)),
        dict(customer_id=2, email=None, phone="+7901", push_token="tok", web_push_endpoint=None, timezone=None, created_at=ts(20)),
        dict(customer_id=3, email="c@x", phone=None, push_token=None, web_push_endpoint="https://push", timezone=None, created_at=ts(5)),
    ], pyarrow.schema([("customer_id", pyarrow.int64()), ("email", pyarrow.string()), ("phone", pyarrow.string()), ("push_token", pyarrow.string()),
                       ("web_push_endpoint", pyarrow.string()), ("timezone", pyarrow.string()), ("created_at", t)]))
    write(data, "consents", [
        dict(customer_id=1, channel="email", status="granted", updated_at=ts(100)),
        dict(customer_id=1, channel="email", status="revoked", updated_at=ts(10)),
        dict(customer_id=1, channel="email", status="granted", updated_at=ts(10)),  # a tie: revoked wins
        dict(customer_id=1, channel="sms", status="granted", updated_at=ts(3)),
        dict(customer_id=2, channel="push", status="revoked", updated_at=ts(50)),
        dict(customer_id=2, channel="push", status="granted", updated_at=ts(1)),
        dict(customer_id=3, channel="email", status="granted", updated_at=ts(-1)),  # in the future of `now`: ignored
        dict(customer_id=3, channel="sms", status="granted", updated_at=ts(10)),
        dict(customer_id=3, channel="sms", status=None, updated_at=ts(5)),  # no status: not granted, so it revokes
        dict(customer_id=2, channel="email", status=None, updated_at=ts(30)),
        dict(customer_id=2, channel="email", status="granted", updated_at=ts(2)),  # granted after it
    ], pyarrow.schema([("customer_id", pyarrow.int64()), ("channel", pyarrow.string()), ("status", pyarrow.string()), ("updated_at", t)]))
    write(data, "sales", [
        dict(order_id=1, customer_id=1, created_at=ts(300), status="completed", total=1000.0),
        dict(order_id=2, customer_id=1, created_at=ts(40), status="completed", total=1500.0),
        dict(order_id=3, customer_id=1, created_at=ts(2), status="returned", total=-1500.0),
        dict(order_id=4, customer_id=2, created_at=ts(1), status="cancelled", total=100.0),
    ], pyarrow.schema([("order_id", pyarrow.int64()), ("customer_id", pyarrow.int64()), ("created_at", t), ("status", pyarrow.string()), ("total", pyarrow.float64())]))
    write(data, "events", [
        dict(customer_id=1, ts=ts(0.1), type="cart_updated"),
        dict(customer_id=1, ts=ts(0.05), type="cart_updated"),
        dict(customer_id=2, ts=ts(30), type="cart_updated"),  # too old to trigger
        dict(customer_id=3, ts=ts(0.01), type="app_opened"),
        dict(customer_id=3, ts=ts(0.01), type="site_visit"),  # no campaign uses it
    ], pyarrow.schema([("customer_id", pyarrow.int64()), ("ts", t), ("type", pyarrow.string())]))
    project = load_project(tmp_path)
    return project, registry().data_sources["duckdb"](project.data_source, project.root)


def test_facts_from_duckdb(tmp_path):
    project, source = project_with_data(tmp_path)
    try:
        facts = load_customer_facts(project, source, None, NOW)
    finally:
        source.close()
    assert len(facts) == 3
    one, two, three = facts.get(1), facts.get(2), facts.get(3)
    assert (one.contacts["email"], one.timezone, one.consents["email"], one.consents["sms"]) == ("a@x", "Asia/Omsk", False, True)
    assert (one.first_order_at, one.last_order_at) == (ts(300), ts(40))  # the return does not count
    assert one.reachable("email") == "no_consent" and one.reachable("sms") is None
    assert two.consents["push"] and two.reachable("push") is None and two.last_order_at is None
    assert two.created_at == ts(20)
    assert three.consents["email"] is False and three.contacts["web_push_endpoint"] == "https://push"
    assert facts.latest_event(1, "cart_updated") == ts(0.05)
    assert facts.latest_event(2, "cart_updated") is None
    assert facts.latest_event(3, "app_opened") == ts(0.01)
    assert facts.latest_event(3, "site_visit") is None


def test_facts_for_some_customers_and_other_dialects(tmp_path):
    project, source = project_with_data(tmp_path)
    try:
        facts = load_customer_facts(project, source, [3, 1], NOW)
    finally:
        source.close()
    assert sorted(facts.table.column("customer_id").to_pylist()) == [1, 3]
    assert facts.get(2) is None

    class Postgres:
        dialect = "postgres"

        def table_columns(self, table):
            return ["customer_id", "email", "phone", "timezone", "created_at"]  # no push columns

    sql = facts_query(project, Postgres(), [1], NOW)
    assert '"sales"' in sql or "sales" in sql
    assert "FILTER(WHERE" in sql and "OVER (" not in sql  # latest consent by aggregate, no window
    assert "IN (SELECT ids.id FROM (VALUES (1)) AS ids(id))" in sql  # the customer asked for, as a table of ids
    assert 'NULL AS "push_token"' in sql


def test_facts_from_rows_fill_the_schema():
    facts = CustomerFacts.from_rows([{"customer_id": 5, "consents": {"email": True}, "email": "e@x", "last_order_at": datetime(2026, 1, 1)}])
    fact = facts.get(5)
    assert fact.consents == {"email": True, "sms": False, "push": False, "web_push": False, "whatsapp": False, "telegram": False}
    assert fact.last_order_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert fact.reachable("email") is None and fact.reachable("web_layer") is None and fact.reachable("push") == "no_consent"


def test_vectorised_questions_agree_with_each_customers_facts():
    """The planner asks inactivity and reachability of whole columns at once;
    every answer must equal what the customer's own CustomerFact says."""
    import random

    import numpy as np

    from campaignctl.facts import CONSENT_KINDS, reach_reasons

    def inactive(fact, now, days):  # the rule as docs/plan.md states it, one customer at a time
        last = fact.last_order_at or fact.created_at
        return last is not None and now - last > timedelta(days=days)

    rng = random.Random(3)
    moments = [None, NOW - timedelta(days=400), NOW - timedelta(days=180, seconds=1), NOW - timedelta(days=180), NOW - timedelta(days=2)]
    rows = [{
        "customer_id": customer_id,
        "email": rng.choice([None, "", "a@b.c"]),
        "phone": rng.choice([None, "", "+79990000000"]),
        "push_token": rng.choice([None, "tok"]),
        "web_push_endpoint": rng.choice([None, "https://push.example/x"]),
        "timezone": rng.choice([None, "", "Asia/Yekaterinburg"]),
        "consents": {kind: rng.choice([True, False]) for kind in CONSENT_KINDS if rng.random() < 0.8},
        "created_at": rng.choice(moments),
        "last_order_at": rng.choice(moments),
    } for customer_id in rng.sample(range(1, 10_000), 400)]
    facts = CustomerFacts.from_rows(rows)
    kinds = ("email", "push", "sms", "telegram", "web_layer", "web_push", "whatsapp")
    codes, idle = facts.reach_rows(kinds), facts.inactive_rows(NOW, 180)
    ids = np.array([row["customer_id"] for row in rows] + [10_001], dtype=np.int64)
    found = facts.rows_of(ids)
    assert found[-1] == -1 and facts.get(10_001) is None
    for customer_id, row in zip(ids[:-1].tolist(), found[:-1].tolist()):
        fact = facts.get(customer_id)
        assert facts.row_of(customer_id) == row
        assert reach_reasons(int(codes[row]), kinds) == tuple(fact.reachable(kind) for kind in kinds)
        assert bool(idle[row]) == inactive(fact, NOW, 180)
        assert facts.last_order_at(customer_id) == fact.last_order_at
        assert facts.timezone(customer_id) == fact.timezone
    assert not facts.inactive_rows(NOW, None).any()
    assert len(set(codes.tolist())) > 10 and 0 < idle.sum() < len(rows)  # the data exercised both answers


def test_a_row_without_a_status_revokes_in_segments_and_facts_alike(tmp_path):
    project, source = project_with_data(tmp_path)
    try:
        audiences = evaluate_segments(project, source, ["everyone", "texting"], now=NOW, columns=FACT_COLUMNS)
        loaded = load_customer_facts(project, source, [1, 2, 3], NOW)
        read_with_segments = facts_from_audiences(project, source, audiences, [1, 2, 3], NOW)
    finally:
        source.close()
    assert audiences.members["texting"].tolist() == [1]  # 3's grant was followed by a row without a status
    assert audiences.members["everyone"].tolist() == [2]  # 2 granted after such a row; 1 revoked on a tie
    for facts in (loaded, read_with_segments):
        assert [facts.get(i).consents["sms"] for i in (1, 2, 3)] == [True, False, False]
        assert [facts.get(i).consents["email"] for i in (1, 2, 3)] == [False, True, False]


# --------------------------------------------------------------------------- read with the segments


def evaluate_both_ways(project, source, names, now):
    """The segments with the facts asked for, after checking that asking for
    them changes no segment."""
    plain = evaluate_segments(project, source, names, now=now)
    audiences = evaluate_segments(project, source, names, now=now, columns=FACT_COLUMNS)
    assert plain.columns is None and plain.members.keys() == audiences.members.keys()
    for name, members in plain.members.items():
        assert members.tolist() == audiences.members[name].tolist(), name
    return audiences


def assert_same_facts(project, source, audiences, ids, now):
    """The facts read with the segments equal load_customer_facts's: the same
    rows for the wanted customers (types per SCHEMA) and events. When most are
    wanted the table keeps every customer, in the query's order; else exactly
    the wanted ones, in id order."""
    expected = load_customer_facts(project, source, ids, now)
    got = facts_from_audiences(project, source, audiences, ids, now)
    everyone = set(audiences.columns.column("customer_id").to_pylist())
    assert got.table.schema.equals(SCHEMA) and got.events.equals(expected.events)
    assert wanted_rows(got.table, ids).equals(expected.table)
    assert expected.table.column("customer_id").to_pylist() == sorted(set(ids) & everyone)
    if 2 * len(set(ids)) < len(everyone):
        assert got.table.equals(expected.table)
    else:
        assert len(got) == len(everyone)
    rows = got.rows_of(np.array(sorted(ids), dtype=np.int64))
    assert [got.table.column("customer_id")[int(r)].as_py() if r >= 0 else None for r in rows] == \
        [i if i in everyone else None for i in sorted(ids)]  # found by id whatever the order
    return got


def wanted_rows(table: pyarrow.Table, ids) -> pyarrow.Table:
    """The rows of ``ids``, in id order."""
    kept = table.filter(pc.is_in(table.column("customer_id"), value_set=pyarrow.array(sorted(set(ids)), pyarrow.int64())))
    return kept.sort_by("customer_id")


def assert_same_facts_on_demo_data(project, source):
    """For the plan's customers, a few plus an unknown id (load_customer_facts's
    IN-list path), and more than the IN list takes but not everyone (kept in Python)."""
    audiences = evaluate_both_ways(project, source, needed_segments(project), DEMO_NOW)
    planned = sorted({int(i) for members in audiences.members.values() for i in members})
    everyone = sorted(audiences.columns.column("customer_id").to_pylist())
    most = [i for i in everyone if i % 5]
    assert len(most) > IN_LIST_LIMIT
    for ids in (planned, everyone[::-97] + [10**9], most):
        facts = assert_same_facts(project, source, audiences, ids, DEMO_NOW)
    assert len(facts.events) and facts.table.column("last_order_at").null_count < len(facts)  # the data exercised them


def test_facts_read_with_the_segments_equal_the_facts_query(project_dir):  # noqa: F811
    project = load_project(project_dir)
    source = registry().data_sources["duckdb"](project.data_source, project.root)
    try:
        assert_same_facts_on_demo_data(project, source)
    finally:
        source.close()


@pytest.mark.postgres
def test_facts_read_with_the_segments_on_postgresql(project_dir, demo_data, postgres_dsn, postgres_schema):  # noqa: F811
    from campaignctl_postgres import load_parquet_dir

    load_parquet_dir(postgres_dsn, demo_data, postgres_schema)
    project = load_project(project_dir)
    source = registry().data_sources["postgres"](DataSourceConfig("postgres", {"dsn": postgres_dsn, "schema": postgres_schema}), project.root)
    try:
        assert_same_facts_on_demo_data(project, source)
    finally:
        source.close()


def test_customer_ids_go_into_queries_as_a_table_of_ids_in_every_dialect():
    import duckdb
    import sqlglot
    from sqlglot import exp

    from campaignctl.segments.compiler import in_ids

    for dialect in ("duckdb", "postgres", "spark"):
        sql = exp.select("x").from_("t").where(in_ids(exp.column("x"), [np.int64(3), 1])).sql(dialect=dialect)
        assert "VALUES (3), (1)" in sql and sqlglot.parse_one(sql, read=dialect).sql(dialect=dialect) == sql
    found = duckdb.sql(exp.select("x").from_("range(10) AS t(x)").where(in_ids(exp.column("x"), [3, 1, 42])).sql(dialect="duckdb"))
    assert sorted(row[0] for row in found.fetchall()) == [1, 3]
    assert in_ids(exp.column("x"), []) == exp.false()
