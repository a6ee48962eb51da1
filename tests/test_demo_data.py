"""The demo retailer: deterministic, consistent, and realistic enough that every scenario segment has members."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import click
import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from campaignctl.cli.demo import demo_data_command
from campaignctl.demo_data import generate_demo_data

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
CUSTOMERS = 4000
CHUNK = 1000  # four chunks, so everything below also checks that chunks fit together

# docs/format.md, "The data contract".
CONTRACT = {
    "customers": ["customer_id", "first_name", "email", "phone", "push_token", "web_push_endpoint",
                  "birthday", "city", "timezone", "home_store_id", "loyalty_tier", "created_at"],
    "consents": ["customer_id", "channel", "status", "updated_at"],
    "orders": ["order_id", "customer_id", "ts", "channel", "store_id", "total", "discount",
               "bonus_spent", "items", "status", "promo_code"],
    "order_lines": ["order_id", "product_id", "category", "qty", "price"],
    "products": ["product_id", "name", "category", "price", "in_stock"],
    "stores": ["store_id", "name", "city", "mall", "lat", "lon"],
    "events": ["customer_id", "ts", "type", "product_id", "category", "payload"],
}
PARTITIONED = ("orders", "order_lines", "events")


def connect(data: Path) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    for table in CONTRACT:
        source = f"{data}/{table}/*.parquet" if table in PARTITIONED else f"{data}/{table}.parquet"
        db.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{source}')")
    return db


def one(db: duckdb.DuckDBPyConnection, sql: str):
    return db.execute(sql).fetchone()[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("demo")
    summary = generate_demo_data(out, CUSTOMERS, seed=7, as_of=AS_OF, chunk_customers=CHUNK)
    return out, summary


@pytest.fixture(scope="module")
def db(demo) -> duckdb.DuckDBPyConnection:
    return connect(demo[0])


def test_same_inputs_give_byte_identical_files(tmp_path):
    first, second, other_seed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((first, 3), (second, 3), (other_seed, 4)):
        generate_demo_data(out, 1500, seed=seed, as_of=AS_OF, chunk_customers=500)
    files = sorted(path.relative_to(first) for path in first.rglob("*.parquet"))
    assert len(files) == 4 + 3 * 3
    assert files == sorted(path.relative_to(second) for path in second.rglob("*.parquet"))
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "orders/part-00000.parquet").read_bytes() != (other_seed / "orders/part-00000.parquet").read_bytes()


def test_every_table_of_the_data_contract_is_written_with_its_columns_and_types(demo, db):
    out, summary = demo
    for table, columns in CONTRACT.items():
        assert [column for column, *_ in db.execute(f"DESCRIBE {table}").fetchall()] == columns
        assert one(db, f"SELECT count(*) FROM {table}") == summary.rows()[table]
    assert len(list((out / "orders").glob("part-*.parquet"))) == CUSTOMERS // CHUNK
    orders = pq.read_schema(out / "orders" / "part-00000.parquet")
    assert str(orders.field("ts").type) == "timestamp[us, tz=UTC]"
    assert str(orders.field("order_id").type) == "int64"
    assert str(orders.field("total").type) == "double"
    assert str(pq.read_schema(out / "customers.parquet").field("birthday").type) == "date32[day]"
    assert summary.as_of == AS_OF


def test_ids_are_unique_across_chunks(db):
    assert db.execute("SELECT min(customer_id), max(customer_id), count(DISTINCT customer_id) FROM customers").fetchone() \
        == (1, CUSTOMERS, CUSTOMERS)
    assert one(db, "SELECT count(*) - count(DISTINCT order_id) FROM orders") == 0
    assert one(db, "SELECT count(*) - count(DISTINCT product_id) FROM products") == 0


def test_every_reference_resolves(db):
    dangling = {
        "order customer": "SELECT count(*) FROM orders o ANTI JOIN customers c USING (customer_id)",
        "line order": "SELECT count(*) FROM order_lines l ANTI JOIN orders o USING (order_id)",
        "order without lines": "SELECT count(*) FROM orders o ANTI JOIN order_lines l USING (order_id)",
        "line product": "SELECT count(*) FROM order_lines l ANTI JOIN products p USING (product_id)",
        "order store": "SELECT count(*) FROM orders o WHERE store_id IS NOT NULL AND store_id NOT IN (SELECT store_id FROM stores)",
        "home store": "SELECT count(*) FROM customers WHERE home_store_id NOT IN (SELECT store_id FROM stores)",
        "consent customer": "SELECT count(*) FROM consents ANTI JOIN customers USING (customer_id)",
        "event customer": "SELECT count(*) FROM events ANTI JOIN customers USING (customer_id)",
        "event product": "SELECT count(*) FROM events WHERE product_id IS NOT NULL AND product_id NOT IN (SELECT product_id FROM products)",
        "line category": "SELECT count(*) FROM order_lines l JOIN products p USING (product_id) WHERE l.category <> p.category",
    }
    assert {name: one(db, sql) for name, sql in dangling.items()} == dict.fromkeys(dangling, 0)


def test_items_and_totals_add_up_to_the_lines(db):
    mismatches = db.execute("""
        SELECT count(*) FILTER (WHERE o.items <> l.qty),
               count(*) FILTER (WHERE abs(o.total - (l.amount - o.discount)) > 0.005),
               count(*) FILTER (WHERE o.total <> round(o.total, 2) OR o.discount <> round(o.discount, 2))
        FROM orders o JOIN (SELECT order_id, sum(qty) AS qty, sum(qty * price) AS amount
                            FROM order_lines GROUP BY order_id) l USING (order_id)
    """).fetchone()
    assert mismatches == (0, 0, 0)
    assert one(db, "SELECT count(*) FROM orders WHERE status <> 'returned' AND (discount < 0 OR discount > total + discount)") == 0
    assert one(db, "SELECT count(*) FROM orders WHERE bonus_spent < 0 OR bonus_spent > greatest(total, 0)") == 0


def test_everything_happens_after_signup_and_before_as_of(db):
    as_of, start = AS_OF.isoformat(), (AS_OF - timedelta(days=3 * 365 + 1)).isoformat()
    assert one(db, f"SELECT count(*) FROM orders WHERE ts >= '{as_of}' OR ts < '{start}'") == 0
    assert one(db, f"SELECT count(*) FROM events WHERE ts >= '{as_of}'") == 0
    assert one(db, f"SELECT count(*) FROM consents WHERE updated_at > '{as_of}'") == 0
    for table in ("orders", "events"):
        before_signup = f"SELECT count(*) FROM {table} t JOIN customers c USING (customer_id) WHERE t.ts < c.created_at"
        assert one(db, before_signup) == 0, table


def test_volumes_match_the_retailer(db):
    orders_per_customer = one(db, f"SELECT count(*) / {CUSTOMERS} FROM orders")
    lines_per_order = one(db, "SELECT (SELECT count(*) FROM order_lines) / count(*) FROM orders")
    assert 16 <= orders_per_customer <= 24
    assert 2.2 <= lines_per_order <= 2.8
    assert one(db, "SELECT count(*) FROM stores") == 118
    assert one(db, "SELECT count(*) FROM stores WHERE mall IS NOT NULL") >= 50
    categories = {row[0] for row in db.execute("SELECT DISTINCT category FROM products").fetchall()}
    assert len(categories) >= 40
    assert {"gift_wrap", "bags", "gift_certificates"} <= categories


def test_average_check_quartiles_are_near_the_scenario_bands(db):
    """SCENARIOS.md: quartiles of 3-year average check near 1,500 / 2,000 / 4,000 after dropping outliers."""
    q1, median, q3 = db.execute("""
        WITH avg_check AS (SELECT customer_id, avg(total) AS value FROM orders
                           WHERE status = 'completed' AND total > 0 GROUP BY customer_id),
             fences AS (SELECT quantile_cont(value, 0.25) AS q1, quantile_cont(value, 0.75) AS q3 FROM avg_check)
        SELECT quantile_cont(value, [0.25, 0.5, 0.75]) FROM avg_check, fences
        WHERE value BETWEEN q1 - 1.5 * (q3 - q1) AND q3 + 1.5 * (q3 - q1)
    """).fetchone()[0]
    assert 1250 <= q1 <= 1750
    assert 1750 <= median <= 2300
    assert 3300 <= q3 <= 4700


def test_returns_are_negative_orders_following_a_purchase(db):
    returns, negative, share = db.execute("""
        SELECT count(*) FILTER (WHERE status = 'returned'),
               count(*) FILTER (WHERE status = 'returned' AND total < 0 AND items < 0),
               count(*) FILTER (WHERE status = 'returned') / count(*)
        FROM orders
    """).fetchone()
    assert returns == negative > 0
    assert 0.02 <= share <= 0.08
    assert one(db, "SELECT count(*) FROM orders WHERE status = 'cancelled'") > 0
    assert one(db, "SELECT count(*) FROM order_lines l JOIN orders o USING (order_id) WHERE (o.status = 'returned') <> (l.qty < 0)") == 0


def test_a_few_company_buyers_have_huge_checks(db):
    companies = one(db, """
        SELECT count(*) FROM (SELECT customer_id FROM orders WHERE status = 'completed'
                              GROUP BY customer_id HAVING avg(total) > 30000)
    """)
    assert 1 <= companies <= 0.01 * CUSTOMERS


def test_offline_orders_peak_at_weekends_and_all_orders_in_december(db):
    def per_weekday(channel: str) -> dict[int, int]:
        rows = db.execute(f"""
            SELECT isodow(timezone(c.timezone, o.ts)), count(*) FROM orders o JOIN customers c USING (customer_id)
            WHERE o.channel = '{channel}' GROUP BY 1
        """).fetchall()
        return dict(rows)

    def weekend_over_weekday(counts: dict[int, int]) -> float:
        return (sum(counts[day] for day in (6, 7)) / 2) / (sum(counts[day] for day in range(1, 6)) / 5)

    assert weekend_over_weekday(per_weekday("offline")) > 1.5
    assert weekend_over_weekday(per_weekday("online")) < 1.1
    by_month = dict(db.execute("SELECT month(ts), count(*) FROM orders WHERE ts >= '2023-12-01' AND ts < '2026-12-01' "
                           "AND month(ts) <> 11 GROUP BY 1").fetchall())
    others = [count for month, count in by_month.items() if month != 12]
    assert by_month[12] > 1.5 * sum(others) / len(others)


def test_customers_cover_the_lifecycle_and_tiers(db):
    stages = db.execute(f"""
        SELECT count(*) FILTER (WHERE last_order IS NULL),
               count(*) FILTER (WHERE first_order >= TIMESTAMPTZ '{AS_OF.isoformat()}' - INTERVAL 30 DAY),
               count(*) FILTER (WHERE last_order < TIMESTAMPTZ '{AS_OF.isoformat()}' - INTERVAL 365 DAY)
        FROM customers LEFT JOIN (SELECT customer_id, min(ts) AS first_order, max(ts) AS last_order
                                  FROM orders GROUP BY customer_id) USING (customer_id)
    """).fetchone()
    never_bought, new, gone_a_year = stages
    assert 0.05 * CUSTOMERS <= never_bought <= 0.2 * CUSTOMERS
    assert new > 0.01 * CUSTOMERS
    assert gone_a_year > 0.05 * CUSTOMERS
    tiers = dict(db.execute("SELECT loyalty_tier, count(*) / %d FROM customers GROUP BY 1" % CUSTOMERS).fetchall())
    assert set(tiers) == {"basic", "silver", "gold"}
    assert tiers["basic"] > tiers["silver"] > tiers["gold"] > 0.03


def test_contacts_and_consents_have_realistic_gaps(db):
    gaps = db.execute("""
        SELECT count(*) FILTER (WHERE email IS NULL), count(*) FILTER (WHERE phone IS NULL),
               count(*) FILTER (WHERE push_token IS NOT NULL), count(*) FILTER (WHERE email IS NOT NULL),
               count(*) FILTER (WHERE birthday IS NULL)
        FROM customers
    """).fetchone()
    no_email, no_phone, push_tokens, emails, no_birthday = gaps
    assert no_email > 0 and no_phone > 0 and no_birthday > 0
    assert 0 < push_tokens < emails / 2
    statuses = db.execute("SELECT DISTINCT channel, status FROM consents").fetchall()
    for channel in ("email", "sms", "push"):
        assert {(channel, "granted"), (channel, "revoked")} <= set(statuses)
    latest_granted_without_email = one(db, """
        SELECT count(*) FROM (SELECT customer_id, arg_max(status, updated_at) AS status FROM consents
                              WHERE channel = 'email' GROUP BY customer_id)
        JOIN customers USING (customer_id) WHERE status = 'granted' AND email IS NULL
    """)
    assert latest_granted_without_email > 0  # consent is not the same as reachable
    changed_their_mind = one(db, "SELECT count(*) FROM (SELECT 1 FROM consents GROUP BY customer_id, channel HAVING count(DISTINCT status) = 2)")
    assert changed_their_mind > 0
    assert one(db, "SELECT count(*) FROM customers ANTI JOIN consents USING (customer_id)") > 0


def test_birthdays_are_adult_ages(db):
    oldest, youngest = db.execute("SELECT min(birthday), max(birthday) FROM customers").fetchone()
    assert date(AS_OF.year - 76, 1, 1) <= oldest and youngest <= date(AS_OF.year - 18, 12, 31)


def test_events_crowd_into_the_last_weeks_and_every_type_occurs(db):
    types = {row[0] for row in db.execute("SELECT DISTINCT type FROM events").fetchall()}
    assert types == {"product_viewed", "category_viewed", "cart_updated", "price_dropped",
                     "site_visit", "app_opened", "order_placed"}
    recent_share = one(db, f"SELECT avg((ts >= TIMESTAMPTZ '{AS_OF.isoformat()}' - INTERVAL 30 DAY)::INT) FROM events")
    assert recent_share > 0.5
    assert one(db, "SELECT count(*) FROM events WHERE type IN ('product_viewed', 'cart_updated', 'price_dropped') AND product_id IS NULL") == 0


def test_there_are_abandoned_carts_in_the_last_hours(db):
    abandoned = one(db, f"""
        SELECT count(DISTINCT e.customer_id) FROM events e
        WHERE e.type = 'cart_updated' AND e.ts >= TIMESTAMPTZ '{AS_OF.isoformat()}' - INTERVAL 6 HOUR
          AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = e.customer_id AND o.ts > e.ts)
    """)
    assert abandoned >= 0.005 * CUSTOMERS


def test_price_drops_hit_products_already_in_the_cart(db):
    drops, carted, at_catalogue_price = db.execute("""
        SELECT count(*),
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM events c WHERE c.type = 'cart_updated'
                   AND c.customer_id = d.customer_id AND c.product_id = d.product_id AND c.ts <= d.ts)),
               count(*) FILTER (WHERE (d.payload::JSON ->> 'new_price')::DOUBLE = p.price
                                  AND (d.payload::JSON ->> 'old_price')::DOUBLE > p.price)
        FROM events d JOIN products p USING (product_id) WHERE d.type = 'price_dropped'
    """).fetchone()
    assert drops > 0
    assert carted == at_catalogue_price == drops


def test_order_placed_events_name_their_online_orders(db):
    unmatched = one(db, """
        SELECT count(*) FROM events e LEFT JOIN orders o
          ON o.order_id = (e.payload::JSON ->> 'order_id')::BIGINT AND o.customer_id = e.customer_id AND o.ts = e.ts
        WHERE e.type = 'order_placed' AND (o.order_id IS NULL OR o.channel = 'offline')
    """)
    assert unmatched == 0


def test_some_orders_use_promo_codes_and_online_orders_have_no_store(db):
    promo_share = one(db, "SELECT avg((promo_code IS NOT NULL)::INT) FROM orders")
    assert 0.02 <= promo_share <= 0.1
    assert one(db, "SELECT count(*) FROM orders WHERE (channel = 'offline') <> (store_id IS NOT NULL)") == 0


def test_chunking_changes_the_draws_but_not_the_shape(tmp_path, demo, db):
    single = tmp_path / "single"
    generate_demo_data(single, CUSTOMERS, seed=7, as_of=AS_OF, chunk_customers=CUSTOMERS)
    other = connect(single)
    out = demo[0]
    for table in ("stores", "products"):  # shared reference data is the same however customers are chunked
        assert (single / f"{table}.parquet").read_bytes() == (out / f"{table}.parquet").read_bytes()
    shape = """
        SELECT count(DISTINCT customer_id), count(*) / count(DISTINCT customer_id),
               avg((status = 'returned')::INT), median(total) FILTER (WHERE status = 'completed')
        FROM orders
    """
    (buyers_a, per_buyer_a, returns_a, median_a) = db.execute(shape).fetchone()
    (buyers_b, per_buyer_b, returns_b, median_b) = other.execute(shape).fetchone()
    assert abs(buyers_a - buyers_b) < 0.05 * CUSTOMERS
    assert per_buyer_a == pytest.approx(per_buyer_b, rel=0.1)
    assert returns_a == pytest.approx(returns_b, abs=0.01)
    assert median_a == pytest.approx(median_b, rel=0.1)
    assert one(other, "SELECT count(DISTINCT customer_id) FROM customers") == CUSTOMERS


def test_a_smaller_run_replaces_the_parts_of_a_bigger_one(tmp_path):
    generate_demo_data(tmp_path, 1200, as_of=AS_OF, chunk_customers=300)
    summary = generate_demo_data(tmp_path, 500, as_of=AS_OF, chunk_customers=300)
    assert sorted(path.name for path in (tmp_path / "orders").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert one(connect(tmp_path), "SELECT count(*) FROM orders") == summary.orders


def test_as_of_defaults_to_the_current_hour_and_naive_means_utc(tmp_path):
    summary = generate_demo_data(tmp_path / "now", 50)
    after = datetime.now(timezone.utc)
    assert summary.as_of.minute == summary.as_of.second == summary.as_of.microsecond == 0
    assert summary.as_of <= after < summary.as_of + timedelta(hours=1)
    naive = generate_demo_data(tmp_path / "naive", 50, as_of=datetime(2026, 1, 1, 9, 30))
    assert naive.as_of == datetime(2026, 1, 1, 9, 30, tzinfo=timezone.utc)


# --------------------------------------------------------------------------
# The command.


@click.group()
@click.option("-C", "--project", default=".")
def cli(project: str) -> None:
    """Stands in for the real group, which owns -C/--project."""


cli.add_command(demo_data_command)


def test_cli_writes_into_the_project_data_directory_and_prints_row_counts(tmp_path):
    result = CliRunner().invoke(cli, ["-C", str(tmp_path), "demo-data", "--customers", "200",
                                      "--as-of", "2026-11-20T15:00:00+03:00"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "customers.parquet").exists()
    assert "2026-11-20T12:00:00+00:00" in result.stdout
    assert "order_lines" in result.stdout and "customers" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_cli_json_output_is_machine_readable(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(demo_data_command, ["--customers", "200", "--seed", "5", "--out", str(out),
                                                    "--as-of", "2026-11-20T12:00:00Z", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["out"] == str(out) and report["seed"] == 5
    assert report["as_of"] == "2026-11-20T12:00:00+00:00"
    assert report["rows"]["customers"] == 200
    assert report["rows"]["orders"] == pq.ParquetDataset(out / "orders").read().num_rows


def test_cli_rejects_a_timestamp_it_cannot_read(tmp_path):
    result = CliRunner().invoke(demo_data_command, ["--as-of", "yesterday", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not an ISO timestamp" in result.output


def test_the_demo_speaks_the_data_contract_vocabulary():
    from campaignctl import datacontract, demo_data

    assert set(demo_data.CHANNELS) == set(datacontract.ORDER_CHANNELS)
    assert set(demo_data.STATUSES) == set(datacontract.ORDER_STATUSES)
    assert set(demo_data.TIERS) == set(datacontract.LOYALTY_TIERS)
    assert set(demo_data.CONSENT_CHANNELS) == set(datacontract.CONSENT_CHANNELS)
    assert set(demo_data.EVENT_TYPES) == set(datacontract.EVENT_TYPES)
