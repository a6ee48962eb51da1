"""The example project's segments and features in pandas: the second baseline
of bench/bench_segments.py, written the way a competent analyst would.

Reads only the needed columns with pyarrow (strings as pandas categoricals,
which is what keeps 50M order lines in memory), filters with boolean masks and
aggregates with groupby. Same semantics as docs/segments.md; Moscow calendar
days are UTC + 3 h (Moscow has not changed its offset since 2014).
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

MOSCOW = timedelta(hours=3)
LABELS = np.array(["below_q1", "q1_median", "median_q3", "above_q3"], dtype=object)


def read(data: Path, table: str, columns: list[str], categories: tuple[str, ...] = ()) -> pd.DataFrame:
    path = data / table if (data / table).is_dir() else data / f"{table}.parquet"
    return pq.read_table(path, columns=columns, read_dictionary=[c for c in categories if c in columns]).to_pandas()


def local_day(ts: pd.Series) -> pd.Series:
    """Days since 1970-01-01 of the Moscow calendar date."""
    micros = ts.dt.as_unit("us").astype("int64")
    return (micros + int(MOSCOW.total_seconds()) * 10**6) // (86400 * 10**6)


def edges_below(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    """How many edges lie strictly below each value."""
    return np.searchsorted(edges, values.to_numpy(dtype=float), side="left")


def evaluate(data: Path, now: datetime, today: date, this_year: datetime, last_year: datetime) -> dict[str, np.ndarray]:
    """Segment name -> sorted customer ids."""
    today_day = (today - date(1970, 1, 1)).days
    days = lambda n: now - timedelta(days=n)  # noqa: E731

    customers = read(data, "customers", ["customer_id", "email", "phone", "push_token", "web_push_endpoint", "birthday", "home_store_id", "loyalty_tier"],
                     ("loyalty_tier",)).set_index("customer_id")
    index = customers.index

    # --- orders: one frame, boolean masks, groupby per figure
    orders = read(data, "orders", ["order_id", "customer_id", "ts", "channel", "store_id", "total", "items", "status"], ("channel", "status"))
    orders = orders[orders.ts <= now]
    completed = orders[orders.status == "completed"]
    by_customer = completed.groupby("customer_id")
    facts = pd.DataFrame(index=index)
    facts["orders_any_status"] = orders[orders.status.isin(["completed", "returned", "cancelled"])].groupby("customer_id").size()
    facts["last_order_any_status"] = orders.groupby("customer_id").ts.max()
    facts["orders"] = by_customer.size()
    facts["first_order"] = by_customer.ts.min()
    facts["last_order"] = by_customer.ts.max()
    for name, n in (("orders_30d", 30), ("orders_60d", 60), ("orders_365d", 365), ("orders_3y", 1095)):
        facts[name] = completed[completed.ts >= days(n)].groupby("customer_id").size()
    year = completed[completed.ts >= days(365)]
    facts["spent_365d"] = year.groupby("customer_id").total.sum()
    facts["max_check_365d"] = year.groupby("customer_id").total.max()
    three_years = completed[completed.ts >= days(1095)].groupby("customer_id")
    facts["avg_check_3y"] = three_years.total.mean()
    facts["avg_items_3y"] = three_years["items"].mean()
    facts["orders_this_year"] = completed[completed.ts >= this_year].groupby("customer_id").size()
    bonus = (completed.ts >= pd.Timestamp("2026-12-07 00:00:00+03:00")) & (completed.ts < pd.Timestamp("2026-12-11 00:00:00+03:00"))
    facts["orders_mass_bonus"] = completed[bonus].groupby("customer_id").size()
    store_last_year = completed[(completed.channel == "offline") & (completed.ts >= last_year) & (completed.ts < this_year)]
    weekday = (local_day(store_last_year.ts) + 3) % 7
    facts["weekday_store_orders_last_year"] = store_last_year[weekday < 5].groupby("customer_id").size()
    stores = read(data, "stores", ["store_id", "mall"])
    mall_stores = stores.store_id[stores.mall.isin(["Aviapark", "Mega Belaya Dacha"])]
    facts["mall_orders_365d"] = year[year.store_id.isin(mall_stores)].groupby("customer_id").size()

    # main store: most offline orders, then the latest, then the lowest id
    offline = year[(year.channel == "offline") & year.store_id.notna()]
    per_store = offline.groupby(["customer_id", "store_id"]).ts.agg(["size", "max"]).reset_index()
    per_store = per_store.sort_values(["customer_id", "size", "max", "store_id"], ascending=[True, False, False, True])
    facts["main_store"] = per_store.drop_duplicates("customer_id").set_index("customer_id").store_id
    facts["main_store"] = facts.main_store.fillna(customers.home_store_id)

    # favourite category: order lines of last year's completed orders
    lines = read(data, "order_lines", ["order_id", "category", "qty", "price"], ("category",))
    lines = lines[lines.category.notna()].merge(year[["order_id", "customer_id"]], on="order_id")
    lines["amount"] = lines.qty * lines.price
    per_category = lines.groupby(["customer_id", "category"], observed=True).amount.agg(["size", "sum"]).reset_index()
    del lines
    per_category["category"] = per_category.category.astype(str)
    per_category = per_category.sort_values(["customer_id", "size", "sum", "category"], ascending=[True, False, False, True])
    facts["favourite_category"] = per_category.drop_duplicates("customer_id").set_index("customer_id").category

    # --- events
    events = read(data, "events", ["customer_id", "ts", "type", "product_id"], ("type",))
    events = events[events.ts <= now]
    by_customer = events.groupby("customer_id")
    facts["first_seen"] = by_customer.ts.min()
    for name, types in (("last_cart", ["cart_updated"]), ("last_product_view", ["product_viewed"]), ("last_category_view", ["category_viewed"]),
                        ("last_cart_or_product_view", ["cart_updated", "product_viewed"])):
        facts[name] = events[events.type.isin(types)].groupby("customer_id").ts.max()
    visits = events[events.type.isin(["site_visit", "app_opened"])]
    facts["visits_7d"] = visits[visits.ts >= days(7)].groupby("customer_id").size()
    facts["visit_days"] = pd.DataFrame({"customer_id": visits.customer_id, "day": local_day(visits.ts)}).groupby("customer_id").day.nunique()

    # price drop on a product in the cart, not ordered since
    carts = events[(events.type == "cart_updated") & (events.ts >= days(30))].groupby(["customer_id", "product_id"]).ts.max().rename("carted_at").reset_index()
    drops = events[(events.type == "price_dropped") & (events.ts >= days(1))][["customer_id", "product_id"]].drop_duplicates()
    candidates = carts.merge(drops, on=["customer_id", "product_id"])
    del events
    recent = orders[orders.ts >= days(30)]
    recent = recent[recent.customer_id.isin(candidates.customer_id)][["order_id", "customer_id", "ts"]]
    bought = read(data, "order_lines", ["order_id", "product_id"])
    bought = bought[bought.order_id.isin(recent.order_id)].merge(recent, on="order_id")
    bought = bought.groupby(["customer_id", "product_id"]).ts.max().rename("ordered_at").reset_index()
    candidates = candidates.merge(bought, on=["customer_id", "product_id"], how="left")
    dropped = candidates[candidates.ordered_at.isna() | (candidates.ordered_at < candidates.carted_at)].customer_id
    facts["price_drop_in_cart"] = facts.index.isin(dropped)

    # consents: the latest row per channel, revoked first on a tie
    consents = read(data, "consents", ["customer_id", "channel", "status", "updated_at"], ("channel", "status"))
    consents = consents[consents.updated_at <= now]
    consents["revoked"] = consents.status != "granted"
    latest = consents.sort_values(["customer_id", "channel", "updated_at", "revoked"]).drop_duplicates(["customer_id", "channel"], keep="last")
    granted = latest[~latest.revoked]
    contact = {"email": "email", "sms": "phone", "push": "push_token", "web_push": "web_push_endpoint", "whatsapp": "phone", "telegram": "phone"}
    for channel, column in contact.items():
        has_contact = customers[column].notna() & (customers[column] != "")
        facts[f"reachable_{channel}"] = index.isin(granted.customer_id[granted.channel == channel]) & has_contact.to_numpy()

    counts = ["orders_any_status", "orders", "orders_30d", "orders_60d", "orders_365d", "orders_3y", "orders_this_year", "orders_mass_bonus",
              "weekday_store_orders_last_year", "mall_orders_365d", "visits_7d", "visit_days", "spent_365d"]
    facts[counts] = facts[counts].fillna(0)
    f = facts
    since = lambda column: today_day - local_day(f[column].dropna()).reindex(f.index)  # noqa: E731
    f["days_since_first_order"], f["days_since_last_order"], f["days_since_first_seen"] = since("first_order"), since("last_order"), since("first_seen")

    # --- features
    buyers = f.orders_365d > 0
    rfm = pd.DataFrame(index=f.index[buyers])
    for letter, column, lower_is_better in (("r", "days_since_last_order", True), ("f", "orders_365d", False), ("m", "spent_365d", False)):
        values = f.loc[buyers, column]
        below = edges_below(values, np.quantile(values.to_numpy(dtype=float), [0.2, 0.4, 0.6, 0.8]))
        rfm[letter] = 5 - below if lower_is_better else 1 + below
    r, fr, m = rfm.r, rfm.f, rfm.m
    groups = np.select(
        [(r >= 4) & (fr >= 4) & (m >= 4), (r >= 3) & (fr >= 4), m == 5, (r >= 4) & (fr <= 2), (r == 3) & fr.isin([2, 3]),
         (r <= 2) & (fr >= 4) & (m >= 4), (r <= 2) & (fr >= 3), (r <= 2) & (fr <= 2)],
        ["champions", "loyal", "big_spenders", "promising", "needs_attention", "cant_lose", "at_risk", "hibernating"], "others")
    f["rfm"] = pd.Series(groups, index=rfm.index)
    f["r"] = rfm.r

    def band(column: str) -> pd.Series:
        values = f[column][f[column] > 0]
        q1, q3 = np.quantile(values, [0.25, 0.75])
        kept = values[values.between(q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1))]
        return pd.Series(LABELS[edges_below(kept, np.quantile(kept, [0.25, 0.5, 0.75]))], index=kept.index)

    f["avg_check_band"], f["basket_depth_band"], f["frequency_band"] = band("avg_check_3y"), band("avg_items_3y"), band("orders_3y")

    span = f.days_since_first_order - f.days_since_last_order
    cycle = np.where((f.orders >= 2) & (span > 0), span / (f.orders - 1), 60.0)
    last = f.days_since_last_order
    stage = np.select([f.orders == 0, f.days_since_first_order <= 30, last > 4.0 * cycle, last > 2.5 * cycle, last > 1.5 * cycle],
                      [None, "new", "deep_churn", "churn", "pre_churn"], "active")
    f["stage"] = pd.Series(stage, index=f.index).where(f.orders > 0)

    # --- segments
    def sample(salt: str, threshold: str) -> np.ndarray:
        return np.array([hashlib.md5(f"{salt}:{i}".encode()).hexdigest()[:8] < threshold for i in f.index])

    def abandoned(event: pd.Series, within: timedelta, after: timedelta, *unless: pd.Series) -> pd.Series:
        hit = (event >= now - within) & (event <= now - after)
        for later in unless:
            hit &= ~(later >= event)
        return hit

    birthdays = {(today + timedelta(days=k)).month * 100 + (today + timedelta(days=k)).day for k in range(8)}
    born = pd.to_datetime(customers.birthday)
    birthday = born.dt.month * 100 + born.dt.day
    stage, rfm_group = f.stage, f.rfm
    cart = abandoned(f.last_cart, timedelta(days=3), timedelta(hours=1), f.last_order_any_status)
    reachable_any = f[[f"reachable_{c}" for c in contact]].any(axis=1)
    not_recent = f.orders_60d == 0
    segments = {
        "no_orders_yet": f.orders_any_status == 0,
        "welcome": (f.orders_any_status == 0) & (f.days_since_first_seen <= 1),
        "registered_no_order": (f.orders_any_status == 0) & f.days_since_first_seen.between(3, 30) & (f.visit_days >= 2),
        "first_order": (f.orders == 1) & (f.days_since_first_order <= 1),
        "birthday_soon": birthday.isin(birthdays),
        "active_last_year": f.orders_365d >= 1,
        "mass_bonus_earners": f.orders_mass_bonus >= 1,
        **{f"reachable_{c}": f[f"reachable_{c}"] for c in contact},
        "reachable_any": reachable_any,
        "no_contact_retargeting": (f.orders_365d >= 1) & ~reachable_any,
        "test_pilot_10pct": sample("uyut_pilot", "1999999a"),
        "abandoned_cart": cart,
        "abandoned_product_view": abandoned(f.last_product_view, timedelta(days=2), timedelta(hours=2), f.last_order_any_status, f.last_cart) & ~cart,
        "abandoned_category_view": abandoned(f.last_category_view, timedelta(days=2), timedelta(hours=3), f.last_order_any_status,
                                             f.last_cart_or_product_view) & ~cart,
        "price_drop_in_cart": f.price_drop_in_cart,
        "visited_not_bought": (f.visits_7d >= 2) & (f.orders_30d == 0) & ~cart,
        "new_customers": stage == "new",
        "active": stage.isin(["new", "active"]),
        "pre_churn": stage == "pre_churn",
        "churn": stage == "churn",
        "deep_churn": stage == "deep_churn",
        "churning": stage.isin(["pre_churn", "churn", "deep_churn"]) & (f.days_since_last_order <= 365),
        "inactive_over_a_year": f.days_since_last_order > 365,
        "bought_last_2_months": f.orders_60d >= 1,
        "bought_this_year": f.orders_this_year >= 1,
        "discount_test_sample": (stage == "churn") & sample("discount_test_2026_11", "33333333"),
        "champions": rfm_group == "champions",
        "loyal": rfm_group.isin(["champions", "loyal"]),
        "at_risk": rfm_group.isin(["at_risk", "cant_lose"]),
        "hibernating": rfm_group == "hibernating",
        "top_recency": f.r == 5,
        "gold_tier": customers.loyalty_tier == "gold",
        "avg_check_below_q1": (f.avg_check_band == "below_q1") & not_recent,
        "avg_check_q1_median": (f.avg_check_band == "q1_median") & not_recent,
        "avg_check_median_q3": (f.avg_check_band == "median_q3") & not_recent,
        "avg_check_above_q3": (f.avg_check_band == "above_q3") & not_recent,
        "shallow_baskets": f.basket_depth_band.isin(["below_q1", "q1_median"]),
        "frequent_buyers": f.frequency_band == "above_q3",
        "bedding_lovers": f.favourite_category == "bedding",
        "weekday_offline_lapsed": (f.weekday_store_orders_last_year >= 2) & (f.orders_this_year == 1) & (f.days_since_last_order > 180),
        "mall_customers": (f.mall_orders_365d >= 1) | f.main_store.isin([12, 37]),
        "big_check_last_year": f.max_check_365d > 5000,
    }
    ids = index.to_numpy()
    return {name: np.sort(ids[np.asarray(mask, dtype=bool)]) for name, mask in segments.items()}
