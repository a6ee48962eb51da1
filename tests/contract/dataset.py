"""The small data set every data source is checked against.

Deterministic (seeded), the whole data contract, and full of the values
engines disagree on: microsecond timestamps, timestamps with and without a
zone, a leap day, dates before 1971, exact decimals and negative (returned)
totals, NULL next to the empty string, quotes, commas, newlines and non-ASCII
text (which also exercises PostgreSQL's CSV COPY in both directions).

Timestamps without a zone are wall-clock time in the project's time zone (the
segment compiler's reading, campaignctl/segments/periods.py); customers.created_at
carries a zone so that both kinds are exercised.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)  # the tests' "now"
LOCAL_NOW = datetime(2026, 11, 20, 12, 0)  # the same, as naive wall-clock time (project timezone UTC)
CUSTOMERS = 120
MONEY = pa.decimal128(12, 2)
TS = pa.timestamp("us")
TS_UTC = pa.timestamp("us", tz="UTC")

CITIES = ["Moscow", "Kazan", "Saint Petersburg", "Ekaterinburg", None]
CATEGORIES = ["bedding", "kitchen", "decor", "gift_wrap", "lighting"]
EVENT_TYPES = ["product_viewed", "category_viewed", "cart_updated", "price_dropped", "site_visit", "app_opened", "order_placed"]
# Names that break naive CSV and text handling.
ODD_NAMES = ['O"Brien, Jr.', "line\nbreak", "", "Ёлка 🎄", "tab\there", "back\\slash", "NULL"]


def _ts(rng: random.Random, days: int) -> datetime:
    """A wall-clock timestamp within ``days`` before LOCAL_NOW, to the microsecond."""
    return LOCAL_NOW - timedelta(seconds=rng.randrange(1, days * 86400), microseconds=rng.randrange(1_000_000))


def customers(rng: random.Random) -> pa.Table:
    rows = []
    for cid in range(1, CUSTOMERS + 1):
        birthday = None if cid % 9 == 0 else date(1960 + cid % 45, 1 + cid % 12, 1 + cid % 28)
        if cid == 2:
            birthday = date(2000, 2, 29)  # leap day
        if cid == 3:
            birthday = date(1970, 1, 1)
        if cid == 4:  # birthday tomorrow and the day after, for `birthday: within_days`
            birthday = date(1988, 11, 21)
        rows.append({
            "customer_id": cid,
            "first_name": ODD_NAMES[cid % len(ODD_NAMES)] if cid <= len(ODD_NAMES) else f"Name{cid}",
            "email": None if cid % 5 == 0 else f"c{cid}@example.com",
            "phone": None if cid % 4 == 0 else f"+7900{cid:07d}",
            "push_token": f"tok{cid}" if cid % 3 == 0 else None,
            "web_push_endpoint": f"https://push.example/{cid}" if cid % 7 == 0 else None,
            "birthday": birthday,
            "city": CITIES[cid % len(CITIES)],
            "timezone": "Europe/Moscow" if cid % 2 else None,
            "home_store_id": 1 + cid % 5,
            "loyalty_tier": ["basic", "silver", "gold"][cid % 3],
            "created_at": datetime(2023, 1, 1, tzinfo=timezone.utc) + timedelta(days=cid * 5, microseconds=cid * 37),
        })
    rows[5]["created_at"] = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("customer_id", pa.int64()), ("first_name", pa.string()), ("email", pa.string()), ("phone", pa.string()),
        ("push_token", pa.string()), ("web_push_endpoint", pa.string()), ("birthday", pa.date32()),
        ("city", pa.string()), ("timezone", pa.string()), ("home_store_id", pa.int64()),
        ("loyalty_tier", pa.string()), ("created_at", TS_UTC),
    ]))


def orders_and_lines(rng: random.Random) -> tuple[pa.Table, pa.Table]:
    orders, lines = [], []
    order_id = 1000
    for cid in range(1, CUSTOMERS + 1):
        for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 8])):
            order_id += 1
            status = rng.choices(["completed", "returned", "cancelled"], [8, 1, 1])[0]
            items = []
            for _line in range(rng.randint(1, 4)):
                qty, price = rng.randint(1, 3), Decimal(rng.randrange(50, 900_000)) / 100
                items.append((qty, price))
                lines.append({"order_id": order_id, "product_id": rng.randint(1, 20), "category": rng.choice(CATEGORIES),
                              "qty": qty, "price": price})
            total = sum((Decimal(q) * p for q, p in items), Decimal("0.00"))
            orders.append({
                "order_id": order_id, "customer_id": cid, "ts": _ts(rng, 700),
                "channel": rng.choice(["online", "offline", "app"]), "store_id": rng.randint(1, 5),
                "total": -total if status == "returned" else total,
                "discount": None if rng.random() < 0.2 else Decimal(rng.randrange(0, 50_000)) / 100,
                "bonus_spent": Decimal(rng.randrange(0, 10_000)) / 100,
                "items": sum(q for q, _ in items), "status": status,
                "promo_code": rng.choice([None, None, "", "WINTER25"]),
            })
    order_schema = pa.schema([
        ("order_id", pa.int64()), ("customer_id", pa.int64()), ("ts", TS), ("channel", pa.string()),
        ("store_id", pa.int64()), ("total", MONEY), ("discount", MONEY), ("bonus_spent", MONEY),
        ("items", pa.int64()), ("status", pa.string()), ("promo_code", pa.string()),
    ])
    line_schema = pa.schema([("order_id", pa.int64()), ("product_id", pa.int64()), ("category", pa.string()),
                             ("qty", pa.int64()), ("price", MONEY)])
    return pa.Table.from_pylist(orders, schema=order_schema), pa.Table.from_pylist(lines, schema=line_schema)


def events(rng: random.Random) -> pa.Table:
    rows = []
    for cid in range(1, CUSTOMERS + 1, 2):
        for _ in range(rng.randint(0, 12)):
            rows.append({"customer_id": cid, "ts": _ts(rng, 30), "type": rng.choice(EVENT_TYPES),
                         "product_id": rng.randint(1, 20), "category": rng.choice(CATEGORIES),
                         "payload": '{"source": "web"}' if rng.random() < 0.3 else None})
    schema = pa.schema([("customer_id", pa.int64()), ("ts", TS), ("type", pa.string()), ("product_id", pa.int64()),
                        ("category", pa.string()), ("payload", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


# WhatsApp consents (no random row has the channel) that only the latest row
# decides, read the same on every source: a tie in time revokes (1), a grant a
# microsecond after a revoke holds (2) and a revoke a microsecond after a grant
# too (3), and times before 1970 compare like any others (6). (A row without a
# status, which revokes, is a data-quality error: tests/test_facts.py has it.)
_T = LOCAL_NOW - timedelta(days=3)
DECIDING_CONSENTS = [
    {"customer_id": cid, "channel": "whatsapp", "status": status, "updated_at": at}
    for cid, status, at in [
        (1, "granted", _T), (1, "revoked", _T),
        (2, "revoked", _T), (2, "granted", _T + timedelta(microseconds=1)),
        (3, "granted", _T), (3, "revoked", _T + timedelta(microseconds=1)),
        (4, "granted", _T),
        (5, "revoked", _T), (5, "granted", _T + timedelta(seconds=1)),
        (6, "revoked", datetime(1965, 3, 1)), (6, "granted", datetime(1968, 7, 1, 0, 0, 0, 1)),
    ]
]
WHATSAPP_GRANTED = {2, 4, 5, 6}


def consents(rng: random.Random) -> pa.Table:
    rows = []
    for cid in range(1, CUSTOMERS + 1):
        for channel in ("email", "sms", "push"):
            if rng.random() < 0.6:
                rows.append({"customer_id": cid, "channel": channel, "status": rng.choice(["granted", "granted", "revoked"]),
                             "updated_at": _ts(rng, 400)})
    rows += DECIDING_CONSENTS
    schema = pa.schema([("customer_id", pa.int64()), ("channel", pa.string()), ("status", pa.string()), ("updated_at", TS)])
    return pa.Table.from_pylist(rows, schema=schema)


def products() -> pa.Table:
    return pa.table({
        "product_id": pa.array(range(1, 21), pa.int64()),
        "name": [f"Product {i}" for i in range(1, 21)],
        "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(1, 21)],
        "price": pa.array([Decimal(i * 199) / 100 for i in range(1, 21)], MONEY),
        "in_stock": [None if i == 7 else i % 4 != 0 for i in range(1, 21)],
    })


def stores() -> pa.Table:
    return pa.table({
        "store_id": pa.array(range(1, 6), pa.int64()),
        "name": [f"Store {i}" for i in range(1, 6)],
        "city": ["Moscow", "Moscow", "Kazan", "Saint Petersburg", "Ekaterinburg"],
        "mall": ["Aviapark", "Mega", None, "Galeria", "Greenwich"],
        "lat": [55.79, 55.91, 55.79, 59.93, 56.83],
        "lon": [37.53, 37.39, 49.12, 30.36, 60.60],
    })


def build() -> dict[str, pa.Table]:
    rng = random.Random(20261120)
    orders, lines = orders_and_lines(rng)
    return {
        "customers": customers(rng), "orders": orders, "order_lines": lines, "events": events(rng),
        "consents": consents(rng), "products": products(), "stores": stores(),
    }


def write(tables: dict[str, pa.Table], directory: Path) -> Path:
    """Write ``tables`` in the layout the file-based sources read: one table
    split into part files (``orders/part-*.parquet``), the rest ``<table>.parquet``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if name == "orders":
            (directory / name).mkdir(exist_ok=True)
            half = table.num_rows // 2
            pq.write_table(table.slice(0, half), directory / name / "part-0.parquet")
            pq.write_table(table.slice(half), directory / name / "part-1.parquet")
        else:
            pq.write_table(table, directory / f"{name}.parquet")
    return directory
