"""Segments on small hand-written data, checked against independent pandas
computations of the same definitions (docs/format.md)."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from campaignctl_duckdb import DuckDBSource

from campaignctl.diagnostics import Location
from campaignctl.loader import load_text
from campaignctl.model import DataSourceConfig, Feature, PluginConfig, Policies, Project, Segment, TableMapping
from campaignctl.segments import check_segments, compile_segments, evaluate_segments, explain_segment, sample_members

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
TODAY = NOW.date()


def at(days_ago: float, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days_ago, hours=hours)


# --- data ---------------------------------------------------------------------------

CUSTOMERS = pd.DataFrame({
    "customer_id": [1, 2, 3, 4, 5, 6, 7, 8],
    "first_name": list("ABCDEFGH"),
    "email": ["a@x", None, "c@x", "", "e@x", "f@x", "g@x", "h@x"],
    "phone": ["+1", "+2", None, "+4", "+5", None, "+7", "+8"],
    "push_token": [None] * 8,
    "web_push_endpoint": [None] * 8,
    "birthday": [date(1990, 2, 28), date(1988, 2, 29), date(1970, 1, 2), date(2000, 6, 15), None, date(1999, 6, 20), date(1985, 12, 31), date(1990, 7, 1)],
    "city": ["Moscow", "Kazan", "Moscow", None, "Kazan", "Moscow", "Omsk", "Omsk"],
    "timezone": ["Europe/Moscow"] * 8,
    "home_store_id": [10, 20, 10, 30, 20, 10, 30, 30],
    "loyalty_tier": ["gold", "basic", "silver", "basic", "gold", "basic", "silver", "basic"],
    "created_at": [at(900)] * 8,
})

STORES = pd.DataFrame({"store_id": [10, 20, 30], "name": ["a", "b", "c"], "city": ["Moscow", "Kazan", "Omsk"],
                       "mall": ["Mega", "Ring", "Mega"], "lat": [0.0] * 3, "lon": [0.0] * 3})

# (order_id, customer, days ago, channel, store, total, status, lines [(product, category, qty, price)])
ORDER_ROWS = [
    (1, 1, 2, "online", None, 1000.0, "completed", [(1, "sofas", 1, 1000.0)]),
    (2, 1, 30, "offline", 10, 1000.0, "completed", [(2, "lamps", 2, 500.0)]),
    (3, 1, 60, "offline", 10, 1000.0, "completed", [(1, "sofas", 1, 1000.0)]),
    (4, 2, 2, "offline", 20, 1000.0, "completed", [(2, "lamps", 1, 1000.0)]),  # ties with customer 1 on recency
    (5, 2, 200, "offline", 20, 3000.0, "completed", [(3, "rugs", 1, 3000.0)]),
    (6, 2, 199, "offline", 20, -3000.0, "returned", [(3, "rugs", -1, 3000.0)]),
    (7, 3, 400, "offline", 10, 2000.0, "completed", [(1, "sofas", 1, 2000.0)]),
    (8, 3, 800, "app", None, 500.0, "completed", [(4, "bags", 1, 500.0)]),
    (9, 4, 10, "online", None, 500000.0, "completed", [(1, "sofas", 100, 5000.0)]),  # a company
    (10, 5, 10, "offline", 30, 1500.0, "completed", [(2, "lamps", 1, 750.0), (3, "rugs", 1, 750.0)]),  # equal amounts: lamps < rugs
    (11, 5, 10, "offline", 20, 1500.0, "cancelled", [(3, "rugs", 2, 750.0)]),
    (12, 6, 100, "offline", 10, 0.0, "completed", [(5, "gift_certificates", 1, 0.0)]),
    (13, 7, 5, "online", None, 2500.0, "completed", [(2, "lamps", 1, 2500.0)]),
    (14, 7, 5, "online", None, 2500.0, "completed", [(2, "lamps", 1, 2500.0)]),  # same day twice
]
# Weekday buyers: 2026-06-15 is a Monday; days ago 7, 8 and 2 fall on mon, sun, sat.

EVENTS = pd.DataFrame([
    (1, at(0, 1), "cart_updated", 7, "sofas"),          # exactly `after` ago: abandoned
    (2, at(0, 0.5), "cart_updated", 7, "sofas"),        # too recent
    (3, at(3), "cart_updated", 7, "sofas"),
    (3, at(1), "order_placed", None, None),             # ordered (as an event) since: not abandoned when unless has it
    (5, at(8), "cart_updated", 7, "sofas"),             # outside within 7d
    (6, at(2), "cart_updated", 8, "lamps"),
    (6, at(1), "price_dropped", 8, "lamps"),            # price drop on a cart product
    (7, at(6), "cart_updated", 2, "lamps"),
    (7, at(1), "price_dropped", 2, "lamps"),            # but orders 13 and 14 came after the cart
    (8, at(20), "cart_updated", 9, "rugs"),
    (8, at(1), "price_dropped", 9, "rugs"),             # cart too old for cart_within 14d
], columns=["customer_id", "ts", "type", "product_id", "category"])
EVENTS["payload"] = None

CONSENTS = pd.DataFrame([
    (1, "email", "granted", at(100)),
    (2, "email", "granted", at(100)),
    (3, "email", "granted", at(100)), (3, "email", "revoked", at(5)),
    (4, "email", "granted", at(10)),
    (5, "email", "revoked", at(50)), (5, "email", "granted", at(40)),
    (6, "email", "granted", at(7)), (6, "email", "revoked", at(7)),   # a tie: revoked wins
    (7, "sms", "granted", at(3)),
], columns=["customer_id", "channel", "status", "updated_at"])


def orders_frames(rows=ORDER_ROWS) -> tuple[pd.DataFrame, pd.DataFrame]:
    orders = pd.DataFrame([
        {"order_id": oid, "customer_id": cid, "ts": at(days), "channel": channel, "store_id": store, "total": total, "discount": 0.0,
         "bonus_spent": 0.0, "items": sum(line[2] for line in lines), "status": status, "promo_code": None}
        for oid, cid, days, channel, store, total, status, lines in rows
    ])
    orders["store_id"] = orders["store_id"].astype("Int64")
    lines = pd.DataFrame([
        {"order_id": oid, "product_id": product, "category": category, "qty": qty, "price": price}
        for oid, _, _, _, _, _, _, lines in rows for product, category, qty, price in lines
    ])
    return orders, lines


def write(directory: Path, name: str, frame: pd.DataFrame) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), directory / f"{name}.parquet")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    orders, lines = orders_frames()
    for name, frame in {"customers": CUSTOMERS, "stores": STORES, "orders": orders, "order_lines": lines, "events": EVENTS, "consents": CONSENTS,
                        "products": pd.DataFrame({"product_id": [1], "name": ["sofa"], "category": ["sofas"], "price": [1.0], "in_stock": [True]})}.items():
        write(directory, name, frame)
    return directory


@pytest.fixture(scope="module")
def source(data_dir):
    source = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": str(data_dir)}), Path("/"))
    yield source
    source.close()


def project(segments=None, features=None, tables=None, timezone="UTC") -> Project:
    def spec(value):
        return value if not isinstance(value, str) else load_text(value, "segments.yaml").value

    return Project(
        root=Path("."), name="test", timezone=timezone, currency="RUB",
        data_source=DataSourceConfig("duckdb", {"path": "data"}, Location("campaignctl.yaml", 5, 1), tables=tables or {}),
        state_store=PluginConfig("sqlite"), channels={}, policies=Policies(),
        features={name: Feature(name, Location("features.yaml"), spec(body), kind=spec(body)["kind"]) for name, body in (features or {}).items()},
        segments={name: Segment(name, Location("segments.yaml"), {"where": spec(where)}) for name, where in (segments or {}).items()},
    )


def feature_values(source, features: dict, name: str, now=NOW) -> dict:
    table = evaluate_segments(project({}, features), source, now=now, features=[name.split(".")[0]]).features
    return dict(zip(table.column("customer_id").to_pylist(), table.column(name).to_pylist()))


def members(source, segments, features=None, now=NOW, **kwargs) -> dict[str, list[int]]:
    audiences = evaluate_segments(project(segments, features, **kwargs), source, now=now)
    return {name: ids.tolist() for name, ids in audiences.members.items()}


# --- independent pandas computations --------------------------------------------------


def completed_orders(since_days: int | None = None) -> pd.DataFrame:
    orders, _ = orders_frames()
    orders = orders[(orders.status == "completed") & (orders.ts <= NOW)]
    return orders[orders.ts >= NOW - timedelta(days=since_days)] if since_days else orders


def scores(values: pd.Series, quantiles: int, lower_is_better: bool) -> pd.Series:
    edges = np.quantile(values.to_numpy(dtype=float), [k / quantiles for k in range(1, quantiles)])  # linear = continuous
    bins = np.searchsorted(edges, values.to_numpy(dtype=float), side="left")  # edges strictly below the value
    return pd.Series(quantiles - bins if lower_is_better else 1 + bins, index=values.index)


# --- tests ----------------------------------------------------------------------------

RFM = {"kind": "rfm", "period": {"last": "365d"}, "recency": {"quantiles": 5}, "frequency": {"quantiles": 5}, "monetary": {"quantiles": 5},
       "groups": {"champions": {"r": [4, 5], "f": [4, 5], "m": [4, 5]}, "loyal": {"f": [4, 5]}, "sleeping": {"r": [1, 2]}}, "fallback": "others"}


def rfm_expected(orders: pd.DataFrame) -> pd.DataFrame:
    per = orders.groupby("customer_id").agg(last=("ts", "max"), frequency=("order_id", "count"), monetary=("total", "sum"))
    per["recency"] = [(TODAY - ts.date()).days for ts in per["last"]]
    per["r"] = scores(per.recency, 5, True)
    per["f"] = scores(per.frequency, 5, False)
    per["m"] = scores(per.monetary, 5, False)

    def group(row):
        if row.r >= 4 and row.f >= 4 and row.m >= 4:
            return "champions"
        if row.f >= 4:
            return "loyal"
        return "sleeping" if row.r <= 2 else "others"

    per["group"] = per.apply(group, axis=1)
    return per


def test_rfm_scores_and_groups_match_pandas(source):
    audiences = evaluate_segments(project({"champions": {"feature": {"name": "rfm", "eq": "champions"}}}, {"rfm": RFM}), source, now=NOW)
    got = audiences.features.to_pandas().set_index("customer_id")
    expected = rfm_expected(completed_orders(365))
    assert got.loc[expected.index, "rfm.r"].tolist() == expected.r.tolist()
    assert got.loc[expected.index, "rfm.f"].tolist() == expected.f.tolist()
    assert got.loc[expected.index, "rfm.m"].tolist() == expected.m.tolist()
    assert got.loc[expected.index, "rfm"].tolist() == expected.group.tolist()
    assert got.loc[~got.index.isin(expected.index), "rfm"].isna().all()  # no purchase in the period: no score
    assert audiences.members["champions"].tolist() == sorted(expected.index[expected.group == "champions"])
    # Customers 1 and 2 bought on the same day: equal recency, equal score.
    assert got.loc[1, "rfm.r"] == got.loc[2, "rfm.r"]


@pytest.mark.parametrize("seed", range(4))
def test_rfm_on_random_data_with_heavy_ties(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n = 300
    orders = pd.DataFrame({
        "order_id": np.arange(n), "customer_id": rng.integers(1, 60, n), "ts": [at(int(d)) for d in rng.choice([1, 5, 30, 30, 90, 200, 400], n)],
        "channel": "online", "store_id": pd.array([None] * n, dtype="Int64"), "total": rng.choice([100.0, 250.0, 250.0, 1000.0], n),
        "discount": 0.0, "bonus_spent": 0.0, "items": 1, "status": rng.choice(["completed", "completed", "returned"], n), "promo_code": None,
    })
    for name, frame in {"customers": CUSTOMERS.iloc[:0], "orders": orders}.items():
        write(tmp_path, name, frame)
    write(tmp_path, "customers", pd.concat([CUSTOMERS.iloc[[0]]] * 59, ignore_index=True).assign(customer_id=range(1, 60)))
    random_source = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": str(tmp_path)}), Path("/"))
    got = evaluate_segments(project({}, {"rfm": RFM}), random_source, now=NOW, features=["rfm"]).features.to_pandas().set_index("customer_id")
    kept = orders[(orders.status == "completed") & (orders.ts >= NOW - timedelta(days=365))]
    expected = rfm_expected(kept)
    for letter in "rfm":
        assert got.loc[expected.index, f"rfm.{letter}"].tolist() == expected[letter].tolist()
    assert got.loc[expected.index, "rfm"].tolist() == expected.group.tolist()


BANDS = {"kind": "quantile_bands", "value": {"orders": {"metric": "avg", "of": "total", "status": ["completed", "returned"], "period": {"last": "3y"}}},
         "quantiles": [0.25, 0.5, 0.75], "outliers": {"iqr": 1.5}, "positive_only": True, "labels": ["below_q1", "q1_median", "median_q3", "above_q3"]}


def test_quantile_bands_drop_outliers_and_non_positive_values(source):
    got = evaluate_segments(project({}, {"band": BANDS}), source, now=NOW, features=["band"]).features.to_pandas().set_index("customer_id")
    orders, _ = orders_frames()
    values = orders[orders.status.isin(["completed", "returned"])].groupby("customer_id").total.mean()
    values = values[values > 0]
    q1, q3 = np.quantile(values, [0.25, 0.75])
    kept = values[(values >= q1 - 1.5 * (q3 - q1)) & (values <= q3 + 1.5 * (q3 - q1))]
    edges = np.quantile(kept, [0.25, 0.5, 0.75])
    labels = np.array(BANDS["labels"])[np.searchsorted(edges, kept.to_numpy(), side="left")]
    assert 4 not in kept.index  # the company is an outlier
    assert got.loc[kept.index, "band"].tolist() == labels.tolist()
    assert got.loc[~got.index.isin(kept.index), "band"].isna().all()  # outliers, returns only (customer 2 averages 333), no orders


def test_lifecycle_stages_from_the_customers_own_cycle(source):
    stage = {"kind": "lifecycle", "new_days": 30, "default_cycle_days": 60, "min_orders": 2, "thresholds": {"pre_churn": 1.5, "churn": 2.5, "deep_churn": 4.0}}
    got = feature_values(source, {"stage": stage}, "stage")
    # 1: days 60, 30, 2 -> cycle 29, last 2 -> active.  2: 200, 2 -> cycle 198 -> active.
    # 3: 800, 400 -> cycle 400, last 400 (> 1.5 * 400? no) -> active.  4: one order 10 days ago -> new.
    # 5: one completed order 10 days ago -> new.  6: one order 100 days ago, default cycle 60 -> pre_churn (>90).
    # 7: two orders on one day, 5 days ago -> new.  8: no orders -> none.
    assert got == {1: "active", 2: "active", 3: "active", 4: "new", 5: "new", 6: "pre_churn", 7: "new", 8: None}
    later = feature_values(source, {"stage": stage}, "stage", now=NOW + timedelta(days=200))
    # 200 days on: 6 is 300 days past one order (> 4 * 60) -> deep_churn; 1 is 202 days past a 29-day cycle -> deep_churn.
    assert (later[1], later[6]) == ("deep_churn", "deep_churn")
    assert later[2] == "active"  # 202 days against its own 198-day cycle



def test_favourite_category_breaks_ties_by_money_then_name(source):
    got = feature_values(source, {"fav": {"kind": "favourite_category", "period": {"last": "365d"}}}, "fav")
    # 1: sofas in two orders, lamps in one.  5: lamps and rugs tie on orders and money -> lamps (the cancelled rugs order does not count).
    # 2: lamps 1000 vs rugs 3000, one order each -> rugs.  3: last order 400 days ago -> none.
    assert got == {1: "sofas", 2: "rugs", 3: None, 4: "sofas", 5: "lamps", 6: "gift_certificates", 7: "lamps", 8: None}


def test_main_store_falls_back_to_home_store(source):
    got = feature_values(source, {"store": {"kind": "main_store", "period": {"last": "365d"}}}, "store")
    assert got == {1: 10, 2: 20, 3: 10, 4: 30, 5: 30, 6: 10, 7: 30, 8: 30}


def test_abandoned_cart_window_edges_and_unless(source):
    got = members(source, {
        "cart": {"abandoned": {"event": "cart_updated", "after": "1h", "within": "7d"}},
        "cart_no_event_order": {"abandoned": {"event": "cart_updated", "after": "1h", "within": "7d", "unless": ["order", "order_placed"]}},
    })
    # 1: exactly an hour ago counts. 2: 30 minutes ago is too early. 3: ordered (event) since -> only without that unless.
    # 5: 8 days ago is outside. 6: a cart without an order since. 7: ordered after the cart. 8: 20 days ago.
    assert got["cart"] == [1, 3, 6]
    assert got["cart_no_event_order"] == [1, 6]


def test_an_order_after_the_cart_cancels_it(source):
    got = members(source, {"cart": {"abandoned": {"event": "cart_updated", "after": "1h", "within": "7d"}}}, now=NOW + timedelta(days=1, hours=1))
    assert 1 in got["cart"] and 7 not in got["cart"]
    earlier = members(source, {"cart": {"abandoned": {"event": "cart_updated", "after": "1h", "within": "30d"}}}, now=NOW - timedelta(days=5, hours=12))
    assert 7 in earlier["cart"]  # customer 7 carted 6 days ago; 5.5 days ago there was no order after it yet


def test_price_drop_on_a_product_in_the_cart(source):
    got = members(source, {"drop": {"price_drop_in_cart": {"within": "7d", "cart_within": "14d"}}})
    assert got["drop"] == [6]  # 7 ordered after putting it in the cart, 8 carted 20 days ago


def test_weekday_offline_buyers_and_periods_match_pandas(source):
    weekday = {"orders": {"metric": "count", "channel": "offline", "weekday": ["mon", "tue", "wed", "thu", "fri"], "period": {"last": "365d"}, "gte": 1}}
    got = members(source, {"weekday": weekday, "returns": {"orders": {"metric": "count", "status": "returned", "gte": 1}},
                           "ago": {"orders": {"metric": "sum", "of": "total", "period": {"ago": ["365d", "100d"]}, "gt": 0}},
                           "this_year": {"orders": {"metric": "count", "period": {"calendar": "this_year"}, "eq": 0}}})
    orders = completed_orders(365)
    offline = orders[(orders.channel == "offline") & (orders.ts.dt.day_of_week < 5)]
    assert got["weekday"] == sorted(offline.customer_id.unique())
    assert got["returns"] == [2]
    all_completed = completed_orders()
    ago = all_completed[(all_completed.ts >= NOW - timedelta(days=365)) & (all_completed.ts < NOW - timedelta(days=100))]
    assert got["ago"] == sorted(ago.groupby("customer_id").total.sum().loc[lambda s: s > 0].index)
    this_year = all_completed[all_completed.ts >= datetime(2026, 1, 1, tzinfo=timezone.utc)]
    assert got["this_year"] == sorted(set(CUSTOMERS.customer_id) - set(this_year.customer_id))


def test_categories_malls_and_null_comparisons(source):
    got = members(source, {
        "sofa_buyers": {"orders": {"metric": "count", "category": "sofas", "gte": 1}},
        "sofa_amount": {"order_lines": {"metric": "sum", "of": "amount", "category": "sofas", "gte": 2000}},
        "mega": {"orders": {"metric": "count", "mall": "Mega", "gte": 1}},
        "avg_known": {"not": {"orders": {"metric": "avg", "of": "total", "gt": 1000}}},
        "no_orders": {"orders": {"metric": "avg", "of": "total", "is_null": True}},
        "not_moscow": {"customer": {"field": "city", "ne": "Moscow"}},
    })
    assert got["sofa_buyers"] == [1, 3, 4]
    assert got["sofa_amount"] == [1, 3, 4]
    assert got["mega"] == [1, 3, 5, 6]
    assert got["avg_known"] == [1, 6, 8]  # NOT of a false-for-null comparison includes customer 8
    assert got["no_orders"] == [8]
    assert got["not_moscow"] == [2, 5, 7, 8]  # a null city is not "not Moscow"


def test_birthdays_wrap_the_year_and_keep_february_29(source):
    feb = members(source, {"soon": {"birthday": {"within_days": 3}}}, now=datetime(2027, 2, 26, 9, tzinfo=timezone.utc))
    assert feb["soon"] == [1, 2]  # 28 February, and 29 February celebrated on the 28th in 2027
    leap = members(source, {"soon": {"birthday": {"within_days": 0}}}, now=datetime(2028, 2, 28, 9, tzinfo=timezone.utc))
    assert leap["soon"] == [1]  # 2028 has a 29th
    new_year = members(source, {"soon": {"birthday": {"within_days": 3}}}, now=datetime(2026, 12, 30, 9, tzinfo=timezone.utc))
    assert new_year["soon"] == [3, 7]


def test_consent_uses_the_latest_row_and_reachable_needs_a_contact(source):
    got = members(source, {"consent": {"consent": "email"}, "reachable": {"reachable": "email"}, "sms": {"reachable": "sms"}})
    assert got["consent"] == [1, 2, 4, 5]  # 3 revoked later, 6 revoked at the same moment
    assert got["reachable"] == [1, 5]  # 2 has no e-mail, 4 an empty one
    assert got["sms"] == [7]


def test_sample_is_md5_of_salt_and_id():
    def expected(percent: float, salt: str) -> list[int]:
        return [i for i in CUSTOMERS.customer_id if int(hashlib.md5(f"{salt}:{i}".encode()).hexdigest()[:8], 16) < round(percent / 100 * 16**8)]

    directory = Path(pytest.importorskip("tempfile").mkdtemp())
    write(directory, "customers", CUSTOMERS)
    sample_source = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": str(directory)}), Path("/"))
    got = members(sample_source, {"half": {"sample": {"percent": 50, "salt": "spring"}}, "all": {"sample": {"percent": 100, "salt": "x"}}})
    assert got["half"] == expected(50, "spring")
    assert got["all"] == list(CUSTOMERS.customer_id)


def test_segment_references_and_renamed_tables(tmp_path):
    orders, lines = orders_frames()
    write(tmp_path, "clients", CUSTOMERS.rename(columns={"customer_id": "client_id"}))
    write(tmp_path, "sales", orders.rename(columns={"ts": "created_at", "customer_id": "client_id"}))
    write(tmp_path, "order_lines", lines)
    renamed = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": str(tmp_path)}), Path("/"))
    tables = {"customers": TableMapping("clients", {"customer_id": "client_id"}), "orders": TableMapping("sales", {"ts": "created_at", "customer_id": "client_id"})}
    segments = {"buyers": {"orders": {"metric": "count", "period": {"last": "365d"}, "gte": 2}},
                "moscow_buyers": {"all": [{"segment": "buyers"}, {"customer": {"field": "city", "eq": "Moscow"}}]}}
    got = members(renamed, segments, tables=tables)
    assert got == {"moscow_buyers": [1], "buyers": [1, 2, 7]}


def test_query_is_pure_and_transpiles():
    p = project({"s": {"all": [{"orders": {"metric": "days_since_last", "weekday": ["sat"], "gt": 3}}, {"sample": {"percent": 5, "salt": "a"}}]}},
                {"rfm": RFM, "band": BANDS})
    duck = compile_segments(p, now=NOW, features=["rfm", "band"])
    assert "CURRENT" not in duck.sql.upper() and "NOW()" not in duck.sql.upper()
    assert duck.sql == compile_segments(p, now=NOW, features=["rfm", "band"]).sql
    assert duck.segments == ("s",) and duck.features[:2] == ("rfm", "rfm.r")
    postgres = compile_segments(p, now=NOW, dialect="postgres", features=["rfm", "band"]).sql
    spark = compile_segments(p, now=NOW, dialect="spark", features=["rfm", "band"]).sql
    assert "PERCENTILE_CONT(0.2) WITHIN GROUP" in postgres and "PERCENTILE(" in spark and "PERCENTILE_APPROX" not in spark
    assert "MATERIALIZED" not in spark
    for sql, dialect in ((postgres, "postgres"), (spark, "spark")):
        sqlglot.parse_one(sql, read=dialect)  # well-formed in its own dialect


SEMANTIC_ERRORS = """\
where:
  all:
    - orders: {metric: sum, gt: 10}
    - orders: {metric: count, gt: 1, lt: 5}
    - order_lines: {metric: avg, of: colour, gt: 1}
    - events: {metric: count, channel: online, gt: 1}
    - segment: nowhere
    - feature: {name: rfm.x, eq: 1}
"""


def test_semantic_errors_are_located_and_all_reported():
    spec = load_text(SEMANTIC_ERRORS, "segments.yaml").value
    p = Project(root=Path("."), name="t", timezone="UTC", currency="RUB", data_source=DataSourceConfig("duckdb"), state_store=PluginConfig("sqlite"),
                channels={}, policies=Policies(), features={"rfm": Feature("rfm", Location("f.yaml"), RFM, kind="rfm")},
                segments={"bad": Segment("bad", Location("segments.yaml", 1, 1), spec)})
    diagnostics = sorted(check_segments(p), key=lambda d: d.location)
    lines = [(d.location.line, d.message) for d in diagnostics]
    assert [line for line, _ in lines] == [3, 4, 5, 6, 7, 8]
    assert "needs 'of'" in lines[0][1]
    assert "more than one comparison operator" in lines[1][1]
    assert "no column 'colour'" in lines[2][1]
    assert "unknown key 'channel'" in lines[3][1]
    assert "unknown segment 'nowhere'" in lines[4][1]
    assert "no part 'x'" in lines[5][1]


def test_explain_and_sample_members(source):
    p = project({"offline_sofas": {"all": [{"orders": {"metric": "count", "channel": "offline", "gte": 1}}, {"not": {"customer": {"field": "city", "eq": "Kazan"}}}]}})
    explanation = explain_segment(p, source, "offline_sofas", now=NOW)
    assert explanation.customers == 8 and explanation.members == 3
    assert [(c.depth, c.members) for c in explanation.conditions] == [(0, 3), (1, 5), (1, 6), (2, 2)]
    assert explanation.conditions[1].text.startswith("orders count (channel offline, status completed) >= 1")
    sample = sample_members(p, source, "offline_sofas", now=NOW, limit=2)
    assert sample.num_rows == 2 and set(sample.column("customer_id").to_pylist()) <= {1, 3, 6}
    assert "orders count (channel offline, status completed)" in sample.column_names


# --- calendar days in the project's time zone -------------------------------------------

MOSCOW_NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)  # 15:00 on Monday 15 June in Moscow (UTC+3)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_calendar_days_are_moscow_days_near_midnight(tmp_path):
    """Orders and events a few minutes either side of midnight in Moscow, which
    is 21:00 UTC: every calendar-day figure must use the Moscow date, whatever
    the engine's session time zone."""
    rows = [
        # (order_id, customer, ts UTC): Moscow wall time in the comment
        (1, 1, utc("2026-06-14 21:30")),  # 00:30 Monday 15 June: today, a Monday (Sunday in UTC)
        (2, 2, utc("2026-06-14 20:30")),  # 23:30 Sunday 14 June: yesterday, a Sunday
        (3, 3, utc("2026-05-31 22:00")),  # 01:00 Monday 1 June: this month (Sunday in May in UTC)
        (4, 4, utc("2026-05-31 20:00")),  # 23:00 Sunday 31 May: last month
    ]
    orders = pd.DataFrame([{"order_id": oid, "customer_id": cid, "ts": ts, "channel": "offline", "store_id": 10, "total": 100.0, "discount": 0.0,
                            "bonus_spent": 0.0, "items": 1, "status": "completed", "promo_code": None} for oid, cid, ts in rows])
    events = pd.DataFrame([
        (5, utc("2026-06-10 20:59"), "site_visit"), (5, utc("2026-06-10 21:01"), "site_visit"),  # 23:59 and 00:01: two Moscow days, one UTC day
        (6, utc("2026-06-11 20:00"), "site_visit"), (6, utc("2026-06-11 20:50"), "app_opened"),  # 23:00 and 23:50: one day either way
    ], columns=["customer_id", "ts", "type"]).assign(product_id=None, category=None, payload=None)
    customers = CUSTOMERS.iloc[:6].copy()
    for name, frame in {"customers": customers, "orders": orders, "events": events}.items():
        write(tmp_path, name, frame)
    segments = {
        "bought_today": {"orders": {"metric": "days_since_last", "eq": 0}},
        "bought_yesterday": {"orders": {"metric": "days_since_last", "eq": 1}},
        "monday_buyers": {"orders": {"metric": "count", "weekday": "mon", "gte": 1}},
        "sunday_buyers": {"orders": {"metric": "count", "weekday": "sun", "gte": 1}},
        "this_month": {"orders": {"metric": "count", "period": {"calendar": "this_month"}, "gte": 1}},
        "last_month": {"orders": {"metric": "count", "period": {"calendar": "last_month"}, "gte": 1}},
        "two_visit_days": {"events": {"metric": "distinct_days", "type": ["site_visit", "app_opened"], "eq": 2}},
        "one_visit_day": {"events": {"metric": "distinct_days", "type": ["site_visit", "app_opened"], "eq": 1}},
    }
    expected = {"bought_today": [1], "bought_yesterday": [2], "monday_buyers": [1, 3], "sunday_buyers": [2, 4], "this_month": [1, 2, 3],
                "last_month": [4], "two_visit_days": [5], "one_visit_day": [6]}
    for session_zone in ("UTC", "America/New_York", "Asia/Tokyo"):
        source = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": str(tmp_path)}), Path("/"))
        source.connection.execute(f"SET TimeZone = '{session_zone}'")
        assert members(source, segments, now=MOSCOW_NOW, timezone="Europe/Moscow") == expected, session_zone
        source.close()
    # The same data read in UTC puts the midnight rows on the other side.
    utc_source = DuckDBSource.from_config(DataSourceConfig("duckdb", {"path": str(tmp_path)}), Path("/"))
    in_utc = members(utc_source, segments, now=MOSCOW_NOW, timezone="UTC")
    assert in_utc["bought_yesterday"] == [1, 2] and in_utc["two_visit_days"] == [] and in_utc["one_visit_day"] == [5, 6] and in_utc["sunday_buyers"] == [1, 2, 3, 4]


def test_local_days_follow_daylight_saving_changes():
    """Berlin moves between UTC+1 and UTC+2: the offsets the SQL uses are the tz database's."""
    from zoneinfo import ZoneInfo

    from campaignctl.segments.periods import utc_offsets

    zone = ZoneInfo("Europe/Berlin")
    changes = utc_offsets("Europe/Berlin", datetime(2026, 12, 1, tzinfo=timezone.utc))
    for moment in (datetime(1985, 3, 31, 0, 59, 59, tzinfo=timezone.utc), datetime(1985, 3, 31, 1, 0, tzinfo=timezone.utc),
                   datetime(2026, 3, 29, 0, 59, 59, tzinfo=timezone.utc), datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc),
                   datetime(2026, 10, 25, 0, 59, 59, tzinfo=timezone.utc), datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc)):
        seconds = int(moment.timestamp())
        offset = [change.offset for change in changes if change.since <= seconds][-1]
        assert offset == moment.astimezone(zone).utcoffset().total_seconds(), moment


class _Rows:
    """A data source answering any query with one table (rows in the engine's order)."""

    dialect = "duckdb"

    def __init__(self, table: pa.Table):
        self.table = table

    def query(self, sql: str) -> pa.Table:
        return self.table


@pytest.mark.parametrize("shuffled", [True, False])
def test_members_come_out_sorted_whatever_order_the_rows_come_in(shuffled):
    from campaignctl.segments import CompiledQuery, run_segments, segment_column

    rng = np.random.default_rng(5)
    ids = np.arange(1, 2001, dtype=np.int64) * 3
    if shuffled:
        ids = rng.permutation(ids)
    masks = {name: rng.random(len(ids)) < share for name, share in (("few", 0.05), ("most", 0.9), ("none", 0.0))}
    table = pa.table({"customer_id": ids, **{segment_column(name): mask for name, mask in masks.items()}})
    query = CompiledQuery("SELECT 1", "duckdb", tuple(masks), ())
    audiences = run_segments(_Rows(table), query, datetime(2026, 1, 1, tzinfo=timezone.utc))
    for name, mask in masks.items():
        assert audiences.members[name].tolist() == sorted(ids[mask].tolist()), name
    assert audiences.customers == len(ids) and audiences.columns is None
