"""A realistic demo retailer, written as Parquet files of the data contract.

The retailer is a home-goods chain with 118 stores (docs/format.md, "The data
contract"; /work/shared/SCENARIOS.md for the numbers it imitates). Everything
is drawn from numpy Generators, so the same (customers, seed, as_of) always
gives byte-identical files.

Memory stays bounded whatever the number of customers: customers are
generated in independent chunks, each from its own Generator seeded with
(seed, chunk index), and every chunk is written before the next one starts.
Small tables are single files (``stores.parquet``, ``products.parquet``, and
``customers.parquet`` / ``consents.parquet`` which get one row group per
chunk); the big ones are directories of part files (``orders/part-00000.parquet``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HISTORY_DAYS = 3 * 365  # orders cover the three years before as_of
EVENT_DAYS = 90  # site and app events cover the last 90 days, most of them the last weeks
CHUNK_CUSTOMERS = 50_000  # ~1M orders and ~2.5M order lines per chunk: peak RSS under 1 GB
# order_id = customer_id * ORDER_ID_STRIDE + rank of the order in the customer's
# history: unique without any coordination between chunks.
ORDER_ID_STRIDE = 10_000
MAX_PURCHASES = 4_000  # purchases plus their returns stay below ORDER_ID_STRIDE
DAY = 86_400
MICROS = 1_000_000
PARQUET_COMPRESSION = "zstd"

ProgressCallback = Callable[[str, int, int], None]

TIMESTAMP = pa.timestamp("us", tz="UTC")
SCHEMAS = {
    "customers": pa.schema([
        ("customer_id", pa.int64()), ("first_name", pa.string()), ("email", pa.string()),
        ("phone", pa.string()), ("push_token", pa.string()), ("web_push_endpoint", pa.string()),
        ("birthday", pa.date32()), ("city", pa.string()), ("timezone", pa.string()),
        ("home_store_id", pa.int64()), ("loyalty_tier", pa.string()), ("created_at", TIMESTAMP),
    ]),
    "consents": pa.schema([
        ("customer_id", pa.int64()), ("channel", pa.string()), ("status", pa.string()),
        ("updated_at", TIMESTAMP),
    ]),
    "orders": pa.schema([
        ("order_id", pa.int64()), ("customer_id", pa.int64()), ("ts", TIMESTAMP),
        ("channel", pa.string()), ("store_id", pa.int64()), ("total", pa.float64()),
        ("discount", pa.float64()), ("bonus_spent", pa.float64()), ("items", pa.int64()),
        ("status", pa.string()), ("promo_code", pa.string()),
    ]),
    "order_lines": pa.schema([
        ("order_id", pa.int64()), ("product_id", pa.int64()), ("category", pa.string()),
        ("qty", pa.int64()), ("price", pa.float64()),
    ]),
    "products": pa.schema([
        ("product_id", pa.int64()), ("name", pa.string()), ("category", pa.string()),
        ("price", pa.float64()), ("in_stock", pa.bool_()),
    ]),
    "stores": pa.schema([
        ("store_id", pa.int64()), ("name", pa.string()), ("city", pa.string()),
        ("mall", pa.string()), ("lat", pa.float64()), ("lon", pa.float64()),
    ]),
    "events": pa.schema([
        ("customer_id", pa.int64()), ("ts", TIMESTAMP), ("type", pa.string()),
        ("product_id", pa.int64()), ("category", pa.string()), ("payload", pa.string()),
    ]),
}
PARTITIONED_TABLES = ("orders", "order_lines", "events")


@dataclass(frozen=True)
class DemoSummary:
    """Rows written per table, and the moment the data describes."""

    as_of: datetime
    customers: int
    consents: int
    orders: int
    order_lines: int
    products: int
    stores: int
    events: int

    def rows(self) -> dict[str, int]:
        return {table: count for table, count in asdict(self).items() if table != "as_of"}


# --------------------------------------------------------------------------
# The retailer: cities, stores, malls, categories, names, promo codes.


@dataclass(frozen=True)
class _City:
    name: str
    timezone: str
    utc_offset_hours: int  # Russia has had no daylight saving time since 2014
    lat: float
    lon: float
    stores: int
    malls: tuple[str, ...]  # one store in each; the rest are street stores


CITIES = (
    _City("Moscow", "Europe/Moscow", 3, 55.7558, 37.6173, 32, (
        "Aviapark", "Evropeisky", "Mega Belaya Dacha", "Mega Teply Stan", "Mega Khimki",
        "Columbus", "Vegas Kuntsevo", "Vegas Crocus City", "Metropolis", "Atrium",
        "Afimall City", "Riviera", "Ocean Plaza", "Rio Leninsky", "Gagarinsky",
        "Kashirskaya Plaza", "Zelenopark", "Salaris")),
    _City("Saint Petersburg", "Europe/Moscow", 3, 59.9343, 30.3351, 16, (
        "Galeria", "Mega Dybenko", "Mega Parnas", "Nevsky Centre", "Piterland",
        "London Mall", "Pulkovo Park", "Okhta Mall", "Europolis")),
    _City("Novosibirsk", "Asia/Novosibirsk", 7, 55.0084, 82.9357, 7, (
        "Aura", "Royal Park", "Mega Novosibirsk", "Galereya Novosibirsk")),
    _City("Yekaterinburg", "Asia/Yekaterinburg", 5, 56.8389, 60.6057, 7, (
        "Greenwich", "Mega Yekaterinburg", "Passage", "Raduga Park")),
    _City("Kazan", "Europe/Moscow", 3, 55.7961, 49.1064, 6, ("Mega Kazan", "Koltso", "Tandem")),
    _City("Nizhny Novgorod", "Europe/Moscow", 3, 56.2965, 43.9361, 6, (
        "Mega Nizhny Novgorod", "Fantastika", "Nebo")),
    _City("Krasnodar", "Europe/Moscow", 3, 45.0355, 38.9753, 6, (
        "Krasnaya Ploshchad", "OZ Mall", "Galereya Krasnodar", "Mega Adygea-Kuban")),
    _City("Samara", "Europe/Samara", 4, 53.1959, 50.1002, 5, ("Mega Samara", "Kosmoport", "Ambar")),
    _City("Rostov-on-Don", "Europe/Moscow", 3, 47.2357, 39.7015, 5, ("Gorizont", "Mega Rostov")),
    _City("Ufa", "Asia/Yekaterinburg", 5, 54.7388, 55.9721, 4, ("Mega Ufa", "Planeta Ufa")),
    _City("Chelyabinsk", "Asia/Yekaterinburg", 5, 55.1644, 61.4368, 4, ("Rodnik", "Gorki")),
    _City("Perm", "Asia/Yekaterinburg", 5, 58.0105, 56.2502, 4, ("Planeta Perm", "Semya")),
    _City("Voronezh", "Europe/Moscow", 3, 51.6720, 39.1843, 4, ("Galereya Chizhova", "Grad")),
    _City("Krasnoyarsk", "Asia/Krasnoyarsk", 7, 56.0153, 92.8932, 4, (
        "Planeta Krasnoyarsk", "Sibirsky Gorodok")),
    _City("Omsk", "Asia/Omsk", 6, 54.9885, 73.3242, 3, ("Mega Omsk",)),
    _City("Volgograd", "Europe/Volgograd", 3, 48.7080, 44.5133, 3, ("Akvarel",)),
    _City("Tyumen", "Asia/Yekaterinburg", 5, 57.1530, 65.5343, 2, ("Kristall",)),
)

# (name, median price in RUB, popularity). The last three are excluded from
# some offers (SCENARIOS.md); bags are only ever added to offline checks.
CATEGORIES = (
    ("bedding", 2500, 6), ("towels", 900, 6), ("bathrobes", 2800, 2), ("blankets", 2200, 3),
    ("pillows", 1300, 3), ("curtains", 2400, 3), ("rugs", 3200, 2), ("cushions", 900, 4),
    ("tableware", 600, 7), ("glassware", 450, 5), ("cutlery", 900, 3), ("cookware", 2600, 4),
    ("bakeware", 800, 3), ("kitchen_textiles", 450, 4), ("kitchen_tools", 350, 6),
    ("food_storage", 400, 5), ("tea_and_coffee", 700, 3), ("storage_boxes", 700, 5),
    ("baskets", 900, 3), ("hangers", 300, 3), ("candles", 450, 5), ("home_fragrance", 700, 4),
    ("vases", 900, 3), ("picture_frames", 500, 3), ("wall_decor", 1200, 2), ("mirrors", 2200, 1.5),
    ("clocks", 1500, 1), ("lamps", 2500, 2), ("garlands", 700, 2), ("artificial_flowers", 500, 3),
    ("plant_pots", 500, 3), ("bathroom_accessories", 600, 4), ("bath_mats", 800, 2),
    ("laundry", 600, 2), ("cleaning", 300, 4), ("christmas_decor", 600, 2), ("kids_room", 1100, 2),
    ("garden", 900, 1.5), ("gift_wrap", 150, 1.5), ("bags", 29, 0), ("gift_certificates", 3000, 0.6),
)
CATEGORY_NAMES = tuple(name for name, _, _ in CATEGORIES)
CATEGORY_MEDIAN_PRICE = np.array([price for _, price, _ in CATEGORIES], dtype=np.float64)
CATEGORY_POPULARITY = np.array([weight for _, _, weight in CATEGORIES], dtype=np.float64)
BAGS = CATEGORY_NAMES.index("bags")
GIFT_CERTIFICATES = CATEGORY_NAMES.index("gift_certificates")
GIFT_CERTIFICATE_PRICES = (1000.0, 2000.0, 3000.0, 5000.0, 10000.0)
BAG_PRICES = (15.0, 29.0, 49.0)
# Favourite categories are real interests, not checkout add-ons.
FAVOURITE_WEIGHTS = CATEGORY_POPULARITY * [
    0.0 if name in ("gift_wrap", "bags", "gift_certificates", "christmas_decor") else 1.0
    for name in CATEGORY_NAMES
]
PRODUCT_STYLES = ("Nordic", "Provence", "Loft", "Classic", "Scandi", "Boho", "Minimal", "Velvet",
                  "Linen", "Terra", "Marble", "Sage", "Ivory", "Amber", "Cotton", "Rattan")


def _category_weights_by_month() -> np.ndarray:
    """Popularity of each category in each month (12 x categories): the season shows in baskets."""
    weights = np.tile(CATEGORY_POPULARITY, (12, 1))
    seasonal = {  # month index (0 = January) -> multiplier
        "christmas_decor": {10: 4.0, 11: 8.0, 0: 1.0, **{m: 0.15 for m in range(1, 10)}},
        "garlands": {10: 2.0, 11: 4.0},
        "gift_wrap": {11: 3.0, 1: 1.5, 2: 1.5},
        "gift_certificates": {11: 3.0, 1: 2.0, 2: 2.5},  # New Year, 23 February, 8 March
        "garden": {3: 2.5, 4: 3.0, 5: 2.5, 10: 0.3, 11: 0.2, 0: 0.2, 1: 0.3},
        "blankets": {9: 1.6, 10: 1.8, 11: 1.5},
    }
    for name, by_month in seasonal.items():
        for month, factor in by_month.items():
            weights[month, CATEGORY_NAMES.index(name)] *= factor
    return weights / weights.sum(axis=1, keepdims=True)


# Cyrillic first name and its Latin spelling for e-mail addresses.
FEMALE_NAMES = (
    ("Анна", "anna"), ("Мария", "maria"), ("Елена", "elena"), ("Ольга", "olga"),
    ("Наталья", "natalya"), ("Екатерина", "ekaterina"), ("Татьяна", "tatyana"), ("Ирина", "irina"),
    ("Светлана", "svetlana"), ("Юлия", "yulia"), ("Анастасия", "anastasia"), ("Дарья", "darya"),
    ("Ксения", "ksenia"), ("Марина", "marina"), ("Виктория", "viktoria"), ("Алина", "alina"),
    ("Полина", "polina"), ("Софья", "sofya"),
)
MALE_NAMES = (
    ("Александр", "alexander"), ("Дмитрий", "dmitry"), ("Сергей", "sergey"), ("Андрей", "andrey"),
    ("Алексей", "alexey"), ("Максим", "maxim"), ("Иван", "ivan"), ("Михаил", "mikhail"),
    ("Артём", "artyom"), ("Николай", "nikolay"), ("Евгений", "evgeny"), ("Павел", "pavel"),
)
FIRST_NAMES = FEMALE_NAMES + MALE_NAMES
# Reserved domains (RFC 2606): demo addresses can never reach a real mailbox.
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")

# (code, fixed amount off, percent off, minimum check): the shapes of SCENARIOS.md's offers.
PROMO_CODES = (
    ("WINTER250", 250.0, 0.0, 2000.0), ("HOME300", 300.0, 0.0, 3000.0),
    ("COZY500", 500.0, 0.0, 4000.0), ("BIG600", 600.0, 0.0, 5000.0),
    ("WELCOME500", 500.0, 0.0, 2500.0), ("SALE10", 0.0, 0.10, 0.0), ("BDAY15", 0.0, 0.15, 0.0),
)

# Two kinds of household budget (multiples of category median prices) make the
# average check skewed to the right: quartiles near 1,500 / 2,000 / 4,000 RUB.
PREMIUM_SHARE, PREMIUM_LEVEL, PREMIUM_SIGMA, REGULAR_LEVEL, REGULAR_SIGMA = 0.3, 2.8, 0.3, 0.62, 0.15

CHANNELS = ("offline", "online", "app")
OFFLINE, APP = 0, 2  # indices into CHANNELS
STATUSES = ("completed", "returned", "cancelled")
COMPLETED, RETURNED, CANCELLED = range(3)
TIERS = ("basic", "silver", "gold")
# Completed spend over the last 365 days that earns a tier (about 20% silver, 10% gold).
TIER_THRESHOLDS = (22_000.0, 60_000.0)
CONSENT_CHANNELS = ("email", "sms", "push", "web_push", "whatsapp", "telegram")
EVENT_TYPES = ("product_viewed", "category_viewed", "cart_updated", "price_dropped",
               "site_visit", "app_opened", "order_placed")
PRODUCT_VIEWED, CATEGORY_VIEWED, CART_UPDATED, PRICE_DROPPED, SITE_VISIT, APP_OPENED, ORDER_PLACED = (
    range(7))
UTM_SOURCES = ("organic", "email", "sms", "push", "ads", "direct")
UTM_WEIGHTS = np.array([0.35, 0.15, 0.08, 0.07, 0.2, 0.15])

# Weekday weights, Monday first: stores fill up at weekends, the site does not.
WEEKDAY_WEIGHTS = np.array([
    [0.80, 0.80, 0.85, 0.90, 1.10, 1.70, 1.55],  # offline
    [1.10, 1.05, 1.00, 1.00, 0.95, 0.85, 1.05],  # online
    [1.00, 1.00, 1.00, 1.00, 1.00, 1.10, 1.15],  # app
])
MONTH_WEIGHTS = np.array([0.80, 0.90, 1.05, 0.90, 0.85, 0.80, 0.80, 0.90, 0.95, 1.00, 1.15, 1.60])
# Local hour of day weights: stores open 10:00-22:00, the site and app peak in the evening.
HOUR_WEIGHTS = np.array([
    [0] * 10 + [0.5, 0.8, 1.0, 1.1, 1.1, 1.1, 1.2, 1.3, 1.3, 1.1, 0.8, 0.4] + [0, 0],
    [0.3, 0.2, 0.1, 0.05, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0,
     1.0, 1.0, 0.9, 0.9, 1.0, 1.1, 1.2, 1.4, 1.6, 1.6, 1.2, 0.7],
    [0.4, 0.2, 0.1, 0.05, 0.05, 0.1, 0.3, 0.6, 0.8, 0.8, 0.8, 0.9,
     1.0, 1.0, 0.9, 0.9, 1.0, 1.1, 1.3, 1.5, 1.7, 1.7, 1.3, 0.8],
])


# --------------------------------------------------------------------------
# Entry point.


def generate_demo_data(
    out_dir: Path,
    customers: int,
    seed: int = 0,
    as_of: datetime | None = None,
    progress: ProgressCallback | None = None,
    *,
    chunk_customers: int = CHUNK_CUSTOMERS,
) -> DemoSummary:
    """Write the demo retailer's tables under ``out_dir`` and say how many rows each got.

    ``as_of`` (default: now, truncated to the hour, UTC) is the moment the data
    describes: every timestamp is before it. ``progress(stage, done, total)`` is
    called as customers are generated. Output of an earlier run in ``out_dir`` is
    replaced; other files there are left alone.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    if chunk_customers < 1:
        raise ValueError("chunk_customers must be at least 1")
    as_of = _as_of_utc(as_of)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous_output(out_dir)

    world = _build_world(np.random.default_rng([seed, 0]), as_of)
    _write_file(out_dir / "stores.parquet", world.stores.table)
    _write_file(out_dir / "products.parquet", world.products.table)
    rows = {"stores": world.stores.table.num_rows, "products": world.products.table.num_rows}
    rows.update(dict.fromkeys(("customers", "consents", *PARTITIONED_TABLES), 0))

    report = progress or (lambda stage, done, total: None)
    report("customers", 0, customers)
    with pq.ParquetWriter(out_dir / "customers.parquet", SCHEMAS["customers"],
                          compression=PARQUET_COMPRESSION) as customers_file, \
            pq.ParquetWriter(out_dir / "consents.parquet", SCHEMAS["consents"],
                             compression=PARQUET_COMPRESSION) as consents_file:
        for chunk_index, first in enumerate(range(0, customers, chunk_customers)):
            size = min(chunk_customers, customers - first)
            rng = np.random.default_rng([seed, 1, chunk_index])
            # Tables are written as soon as they exist, so a chunk's tables never all sit in memory.
            for name, table in _generate_chunk(world, rng, first_customer_id=first + 1, size=size):
                if name == "customers":
                    customers_file.write_table(table)
                elif name == "consents":
                    consents_file.write_table(table)
                else:
                    _write_file(out_dir / name / f"part-{chunk_index:05d}.parquet", table)
                rows[name] += table.num_rows
            report("customers", first + size, customers)
    return DemoSummary(as_of=as_of, **rows)


def _as_of_utc(as_of: datetime | None) -> datetime:
    """The given moment in UTC (naive means UTC), or now truncated to the hour."""
    if as_of is None:
        return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    if as_of.tzinfo is None:
        return as_of.replace(tzinfo=timezone.utc)
    return as_of.astimezone(timezone.utc)


def _remove_previous_output(out_dir: Path) -> None:
    """Delete what an earlier run wrote, so a smaller run leaves no stale part files behind."""
    for name in SCHEMAS:
        (out_dir / f"{name}.parquet").unlink(missing_ok=True)
    for name in PARTITIONED_TABLES:
        for part in (out_dir / name).glob("part-*.parquet"):
            part.unlink()


def _write_file(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression=PARQUET_COMPRESSION)


# --------------------------------------------------------------------------
# Shared reference data: stores, products and the calendar.


@dataclass(frozen=True)
class _Stores:
    table: pa.Table
    city: np.ndarray  # city index per store (stores are grouped by city)
    weight: np.ndarray  # share of customers who pick the store as their home store
    city_first: np.ndarray  # first store index of each city
    city_count: np.ndarray


@dataclass(frozen=True)
class _Products:
    table: pa.Table
    category: np.ndarray  # per product; products are sorted by (category, price)
    price: np.ndarray
    price_keys: np.ndarray  # category * PRICE_KEY_SPAN + price, ascending: one searchsorted finds a price
    category_first: np.ndarray
    category_count: np.ndarray


PRICE_KEY_SPAN = 10_000_000.0  # above any price


@dataclass(frozen=True)
class _World:
    as_of_s: int  # epoch seconds
    history_start_s: int  # UTC midnight of the first day of the order history
    day_month: np.ndarray  # month (0-11) of every history day
    day_cdf_keys: np.ndarray  # channel + cumulative share of that channel's orders up to each day
    hour_cdf: np.ndarray  # per channel, cumulative share of orders by local hour
    category_month_keys: np.ndarray  # month + cumulative category popularity in that month
    stores: _Stores
    products: _Products


def _build_world(rng: np.random.Generator, as_of: datetime) -> _World:
    as_of_s = int(as_of.timestamp())
    last_day = np.datetime64(as_of.date(), "D")
    days = last_day - np.arange(HISTORY_DAYS - 1, -1, -1)
    return _World(
        as_of_s=as_of_s,
        history_start_s=int(days[0].astype("datetime64[s]").astype(np.int64)),
        day_month=(days.astype("datetime64[M]").astype(np.int64) % 12),
        day_cdf_keys=_day_cdf_keys(days),
        hour_cdf=np.cumsum(HOUR_WEIGHTS, axis=1) / HOUR_WEIGHTS.sum(axis=1, keepdims=True),
        category_month_keys=(np.arange(12)[:, None] + np.cumsum(_category_weights_by_month(), axis=1)).ravel(),
        stores=_build_stores(rng),
        products=_build_products(rng),
    )


def _day_cdf_keys(days: np.ndarray) -> np.ndarray:
    """Per channel, the cumulative share of orders up to each day, offset by the channel index.

    Row ``c`` holds ``c + cdf`` with a leading ``c + 0``, so one searchsorted on
    the flattened array samples a day for orders of any channel mix.
    """
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64)
    season = MONTH_WEIGHTS[month]
    # The December rush builds up to the New Year; the first days of January are holidays.
    season = np.where(month == 11, season * (0.8 + day_of_month / 30), season)
    season = np.where((month == 0) & (day_of_month < 3), 0.3, season)
    growth = 1 + 0.2 * np.arange(len(days)) / len(days)  # the chain grows about 6% a year
    weights = WEEKDAY_WEIGHTS[:, weekday] * season * growth
    cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    cdf = np.hstack([np.zeros((len(CHANNELS), 1)), cdf])
    return (np.arange(len(CHANNELS))[:, None] + cdf).ravel()


def _build_stores(rng: np.random.Generator) -> _Stores:
    names, cities, malls, lats, lons, city_index = [], [], [], [], [], []
    for index, city in enumerate(CITIES):
        for number in range(city.stores):
            mall = city.malls[number] if number < len(city.malls) else None
            names.append(f"Uyut {mall}" if mall else f"Uyut {city.name} #{number - len(city.malls) + 1}")
            cities.append(city.name)
            malls.append(mall)
            city_index.append(index)
        # Stores spread over the city, within about 12 km of its centre.
        lats.extend(np.round(city.lat + rng.uniform(-0.11, 0.11, city.stores), 6))
        lons.extend(np.round(city.lon + rng.uniform(-0.18, 0.18, city.stores), 6))
    city_of_store = np.array(city_index)
    is_mall = np.array([mall is not None for mall in malls])
    weight = np.where(is_mall, 1.5, 1.0) * rng.lognormal(0.0, 0.35, len(names))
    counts = np.array([city.stores for city in CITIES])
    table = pa.table({
        "store_id": pa.array(np.arange(1, len(names) + 1), pa.int64()),
        "name": names, "city": cities, "mall": pa.array(malls, pa.string()),
        "lat": pa.array(lats, pa.float64()), "lon": pa.array(lons, pa.float64()),
    }, schema=SCHEMAS["stores"])
    return _Stores(table, city_of_store, weight / weight.sum(), np.cumsum(counts) - counts, counts)


def _build_products(rng: np.random.Generator) -> _Products:
    """About 2,000 products; a category's prices spread lognormally around its median."""
    categories, prices, names = [], [], []
    for index, (category, median, popularity) in enumerate(CATEGORIES):
        title = category.replace("_", " ").capitalize()
        if index == GIFT_CERTIFICATES:
            category_prices = np.array(GIFT_CERTIFICATE_PRICES)
            category_names = [f"Gift certificate {price:.0f} RUB" for price in category_prices]
        elif index == BAGS:
            category_prices = np.array(BAG_PRICES)
            category_names = [f"Bag {size}" for size in ("small", "medium", "large")]
        else:
            count = int(20 + 8 * popularity)
            # Shelf prices end in 9: 1,299 rather than 1,287.
            raw = median * rng.lognormal(0.0, 0.55, count)
            category_prices = np.sort(np.maximum(np.round(raw, -1) - 1, 49.0))
            styles = rng.choice(PRODUCT_STYLES, count)
            category_names = [f"{title} {style} {index:02d}{n:03d}" for n, style in enumerate(styles)]
        categories.extend([index] * len(category_prices))
        prices.extend(category_prices)
        names.extend(category_names)
    category = np.array(categories)
    price = np.array(prices, dtype=np.float64)
    counts = np.bincount(category, minlength=len(CATEGORIES))
    table = pa.table({
        "product_id": pa.array(np.arange(1, len(price) + 1), pa.int64()),
        "name": names,
        "category": pa.array(CATEGORY_NAMES).take(category),
        "price": price,
        "in_stock": rng.random(len(price)) < 0.92,
    }, schema=SCHEMAS["products"])
    return _Products(table, category, price, category * PRICE_KEY_SPAN + price,
                     np.cumsum(counts) - counts, counts)


# --------------------------------------------------------------------------
# Vectorised helpers.


def _group_of_rows(counts: np.ndarray) -> np.ndarray:
    """For groups of the given sizes laid out one after another, the group of every row."""
    return np.repeat(np.arange(len(counts)), counts)


def _rank_in_group(counts: np.ndarray) -> np.ndarray:
    """For groups laid out one after another, the position of every row within its group."""
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def _cumsum_in_group(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    total = np.cumsum(values)
    before_group = np.concatenate([[0.0], total])[np.cumsum(counts) - counts]
    return total - np.repeat(before_group, counts)


def _sorted_order(*keys: np.ndarray) -> np.ndarray:
    """Row order sorted by the first key, ties by the next ones (np.lexsort with keys reversed).

    The keys are packed into one int64 first: a stable argsort of that is about
    twenty times faster than np.lexsort on millions of rows.
    """
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    capacity = 1
    for key in keys:
        low = int(key.min()) if len(key) else 0
        span = int(key.max()) - low + 1 if len(key) else 1
        capacity *= span
        packed = packed * span + (key - low)
    assert capacity < 2**63, "sort keys too wide to pack into an int64"
    return np.argsort(packed, kind="stable")


def _pick(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Indices drawn with the given (unnormalised) weights."""
    cdf = np.cumsum(weights) / np.sum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(weights) - 1)


def _strings(values: tuple[str, ...] | list[str], indices: np.ndarray) -> pa.Array:
    """Strings looked up by index; a negative index is null."""
    return pa.array(values, pa.string()).take(pa.array(indices, pa.int64(), mask=indices < 0))


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64) * MICROS, TIMESTAMP)


def _nullable_ids(ids: np.ndarray, present: np.ndarray) -> pa.Array:
    return pa.array(ids, pa.int64(), mask=~present)


def _hex_strings(rng: np.random.Generator, size: int, length: int) -> np.ndarray:
    """Random lowercase hex strings (tokens, endpoint ids) without a Python loop."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = digits[rng.integers(0, 16, (size, length))]
    return chars.view(f"S{length}").ravel()


def _joined(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def demo_web_push_key(index: int):
    """The private key of demo browser ``index`` (0-15): fixed, so a test can
    decrypt what was pushed to a demo subscription."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ec

    scalar = int.from_bytes(hashlib.sha256(f"campaignctl demo browser {index}".encode()).digest(), "big")
    return ec.derive_private_key(scalar % (2**256 - 2**224 - 1) + 1, ec.SECP256R1())  # below the P-256 order


def _web_push_subscriptions(endpoint_ids: pa.Array) -> pa.Array:
    """PushSubscription JSON (endpoint, keys.p256dh, keys.auth), as a browser's
    subscribe() gives it and the web_push channel needs it to encrypt. The keys
    come from 16 fixed demo browsers, picked by the id's first hex digit."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    keys = []
    for index in range(16):
        public = demo_web_push_key(index).public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        auth = hashlib.sha256(f"campaignctl demo auth {index}".encode()).digest()[:16]
        keys.append(f'","keys":{{"p256dh":"{b64(public)}","auth":"{b64(auth)}"}}}}')
    which = pc.index_in(pc.utf8_slice_codeunits(endpoint_ids, 0, 1), value_set=pa.array(list("0123456789abcdef")))
    return _joined('{"endpoint":"https://push.example.com/wp/', endpoint_ids, pc.take(pa.array(keys), which))


# --------------------------------------------------------------------------
# One chunk of customers with everything that belongs to them.


@dataclass(frozen=True)
class _Profiles:
    """Hidden traits that drive a chunk's customers' behaviour (not written out)."""

    customer_id: np.ndarray
    home_store: np.ndarray  # store index
    city: np.ndarray  # city index
    created_s: np.ndarray
    buys: np.ndarray  # bool: has bought at least once in the history
    company: np.ndarray  # bool: a company buyer with huge checks
    start_day: np.ndarray  # first and last day (history day index) the customer buys
    end_day: np.ndarray
    cycle_days: np.ndarray
    price_level: np.ndarray  # multiplies category median prices
    channel_cdf: np.ndarray  # (customers, 3) cumulative channel preference
    has_app: np.ndarray
    shops_online: np.ndarray
    favourite_category: np.ndarray
    engagement: np.ndarray  # expected site/app sessions over EVENT_DAYS


def _generate_chunk(world: _World, rng: np.random.Generator, first_customer_id: int,
                    size: int) -> Iterator[tuple[str, pa.Table]]:
    """(table name, rows) for one chunk of customers and everything that belongs to them."""
    profiles = _draw_profiles(world, rng, first_customer_id, size)
    orders, lines = _draw_orders(world, rng, profiles)
    yield "orders", _orders_table(profiles, orders)
    yield "order_lines", _order_lines_table(world, orders, lines)
    del lines  # the biggest arrays of the chunk; events need none of them
    created_s = _registered_before_first_order(rng, profiles, orders)
    customers = _customers_table(world, rng, profiles, orders.tier, created_s)
    yield "customers", customers
    yield "consents", _consents_table(world, rng, customers, created_s)
    yield "events", _events_table(world, rng, profiles, orders, created_s)


def _draw_profiles(world: _World, rng: np.random.Generator, first_customer_id: int,
                   size: int) -> _Profiles:
    customer_id = np.arange(first_customer_id, first_customer_id + size, dtype=np.int64)
    home_store = _pick(rng, world.stores.weight, size)
    company = rng.random(size) < 0.003
    never_bought = ~company & (rng.random(size) < 0.12)
    new = ~company & ~never_bought & (rng.random(size) < 0.06)

    # Days since registration: regulars joined any time in the last 8 years,
    # new customers in the last two months, never-buyers mostly recently.
    age_days = rng.uniform(60, 8 * 365, size)
    age_days = np.where(new, rng.uniform(0.1, 60, size), age_days)
    never_bought_age = np.where(rng.random(size) < 0.4, rng.uniform(0.1, 60, size),
                                rng.uniform(60, 3 * 365, size))
    age_days = np.where(never_bought, never_bought_age, age_days)
    created_s = world.as_of_s - (age_days * DAY).astype(np.int64)

    last_day = HISTORY_DAYS - 1
    start_day = np.clip(last_day - age_days.astype(np.int64), 0, last_day)
    # A third of established customers stopped buying at some point at least 3 months ago.
    churn_room = np.maximum(last_day - 90 - start_day, 0)
    churned = ~new & ~company & (rng.random(size) < 0.33) & (churn_room > 0)
    end_day = np.where(churned, start_day + (rng.random(size) * churn_room).astype(np.int64), last_day)

    cycle_days = np.where(company, rng.lognormal(np.log(20), 0.5, size),
                          rng.lognormal(np.log(38), 0.6, size))
    premium = rng.random(size) < PREMIUM_SHARE
    price_level = np.where(premium, rng.lognormal(np.log(PREMIUM_LEVEL), PREMIUM_SIGMA, size),
                           rng.lognormal(np.log(REGULAR_LEVEL), REGULAR_SIGMA, size))

    has_app = rng.random(size) < 0.3
    shops_online = rng.random(size) < 0.5
    offline_weight = np.where(rng.random(size) < 0.1, 0.05, 1.0)  # some never visit a store
    preference = np.column_stack([
        offline_weight,
        shops_online * rng.lognormal(np.log(0.5), 0.8, size),
        has_app * rng.lognormal(np.log(0.6), 0.8, size),
    ])
    channel_cdf = np.cumsum(preference, axis=1) / preference.sum(axis=1, keepdims=True)

    digital = has_app | shops_online | never_bought
    engagement = digital * rng.lognormal(np.log(2.5), 0.8, size) * np.where(churned, 0.4, 1.0)
    return _Profiles(
        customer_id=customer_id, home_store=home_store, city=world.stores.city[home_store],
        created_s=created_s, buys=~never_bought, company=company, start_day=start_day,
        end_day=end_day, cycle_days=cycle_days, price_level=price_level, channel_cdf=channel_cdf,
        has_app=has_app, shops_online=shops_online,
        favourite_category=_pick(rng, FAVOURITE_WEIGHTS, size), engagement=engagement,
    )


# --------------------------------------------------------------------------
# Orders and order lines.


@dataclass(frozen=True)
class _Orders:
    """A chunk's orders, purchases and returns alike, sorted by (customer, ts)."""

    customer: np.ndarray  # customer index within the chunk
    order_id: np.ndarray
    ts_s: np.ndarray
    channel: np.ndarray
    store: np.ndarray  # store index, -1 for online and app orders
    status: np.ndarray
    total: np.ndarray
    discount: np.ndarray
    bonus_spent: np.ndarray
    promo: np.ndarray  # promo code index, -1 for none
    items: np.ndarray
    first_product: np.ndarray  # product index of the order's first line
    per_customer: np.ndarray  # number of orders of each customer
    tier: np.ndarray  # loyalty tier index of each customer


@dataclass(frozen=True)
class _Purchases:
    """Completed and cancelled orders of a chunk, in the order they were drawn."""

    customer: np.ndarray  # customer index within the chunk
    day: np.ndarray  # history day index
    ts_s: np.ndarray
    channel: np.ndarray
    store: np.ndarray  # store index, -1 for online and app orders
    status: np.ndarray


@dataclass(frozen=True)
class _Lines:
    order: np.ndarray  # index of the line's order; lines are grouped by order
    product: np.ndarray  # product index
    qty: np.ndarray


@dataclass(frozen=True)
class _Money:
    """Per purchase: what the lines cost, what came off, and how it was paid."""

    gross: np.ndarray  # sum of qty * price
    discount: np.ndarray
    promo: np.ndarray  # promo code index, -1 for none
    bonus_spent: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return np.round(self.gross - self.discount, 2)


def _draw_orders(world: _World, rng: np.random.Generator, profiles: _Profiles) -> tuple[_Orders, _Lines]:
    """Orders sorted by (customer, ts), and their lines grouped by order in the same order."""
    purchases = _draw_purchases(world, rng, profiles)
    lines = _draw_lines(world, rng, profiles, purchases)
    gross = np.bincount(lines.order, weights=lines.qty * world.products.price[lines.product],
                        minlength=len(purchases.customer))
    discount, promo = _draw_discounts(rng, gross)
    tier = _loyalty_tiers(world, len(profiles.customer_id), purchases, gross - discount)
    bonus_spent = _draw_bonus_spent(rng, purchases, gross - discount, tier)
    money = _Money(gross, discount, promo, bonus_spent)
    returns = _draw_returns(world, rng, purchases, lines, money)
    return _sorted_orders(world, profiles, purchases, lines, money, returns, tier)


def _draw_purchases(world: _World, rng: np.random.Generator, profiles: _Profiles) -> _Purchases:
    span_days = profiles.end_day - profiles.start_day + 1
    expected = span_days / profiles.cycle_days
    count = np.where(profiles.buys, np.maximum(rng.poisson(expected), 1), 0)
    count = np.minimum(count, MAX_PURCHASES)
    customer = _group_of_rows(count)
    size = len(customer)

    channel = (rng.random(size)[:, None] > profiles.channel_cdf[customer]).sum(axis=1)
    channel = np.minimum(channel, APP)
    day = _sample_days(world, rng, channel, profiles.start_day[customer], profiles.end_day[customer])
    hour_keys = (np.arange(len(CHANNELS))[:, None] + world.hour_cdf).ravel()
    hour = np.searchsorted(hour_keys, channel + rng.random(size), side="right") - channel * 24
    local_s = np.clip(hour, 0, 23) * 3600 + rng.integers(0, 3600, size)
    utc_offset_s = np.array([city.utc_offset_hours for city in CITIES])[profiles.city[customer]] * 3600
    ts_s = world.history_start_s + day * DAY + local_s - utc_offset_s
    # The last day is cut at as_of: later orders move a week back, keeping their weekday.
    ts_s = np.where(ts_s >= world.as_of_s, ts_s - 7 * DAY, ts_s)

    store = np.where(channel == OFFLINE, _offline_stores(world, rng, profiles, customer), -1)
    cancel_rate = np.array([0.005, 0.04, 0.035])[channel]
    status = np.where(rng.random(size) < cancel_rate, CANCELLED, COMPLETED)
    return _Purchases(customer, day, ts_s, channel, store, status)


def _sample_days(world: _World, rng: np.random.Generator, channel: np.ndarray,
                 first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """History days with the channel's weekday and seasonal pattern, between first and last."""
    row = channel * (HISTORY_DAYS + 1)
    low = world.day_cdf_keys[row + first]
    high = world.day_cdf_keys[row + last + 1]
    keys = low + (high - low) * rng.random(len(channel))
    day = np.searchsorted(world.day_cdf_keys, keys, side="right") - row - 1
    return np.clip(day, first, last)


def _offline_stores(world: _World, rng: np.random.Generator, profiles: _Profiles,
                    customer: np.ndarray) -> np.ndarray:
    """Mostly the home store; otherwise another store in the customer's city."""
    city = profiles.city[customer]
    other = world.stores.city_first[city] + (
        rng.random(len(customer)) * world.stores.city_count[city]).astype(np.int64)
    return np.where(rng.random(len(customer)) < 0.8, profiles.home_store[customer], other)


def _draw_lines(world: _World, rng: np.random.Generator, profiles: _Profiles,
                purchases: _Purchases) -> _Lines:
    """About 2.5 lines per order: products from the season's and the customer's categories."""
    orders = len(purchases.customer)
    company = profiles.company[purchases.customer]
    regular_lines = np.where(company, 3 + rng.poisson(5, orders), 1 + rng.poisson(1.15, orders))
    # A carrier bag at the till, as the last line of many offline checks.
    with_bag = (purchases.channel == OFFLINE) & (rng.random(orders) < 0.35)
    lines_per_order = regular_lines + with_bag
    line_order = _group_of_rows(lines_per_order)
    size = len(line_order)
    is_bag = _rank_in_group(lines_per_order) == regular_lines[line_order]
    line_customer = purchases.customer[line_order]

    month = world.day_month[purchases.day[line_order]]
    seasonal = np.searchsorted(world.category_month_keys, month + rng.random(size),
                               side="right") - month * len(CATEGORIES)
    seasonal = np.clip(seasonal, 0, len(CATEGORIES) - 1)
    category = np.where(rng.random(size) < 0.35, profiles.favourite_category[line_customer], seasonal)

    target = (CATEGORY_MEDIAN_PRICE[category] * profiles.price_level[line_customer]
              * rng.lognormal(0, 0.45, size))
    product = _products_near_price(world.products, category, target)
    bag = world.products.category_first[BAGS] + rng.integers(0, len(BAG_PRICES), size)
    product = np.where(is_bag, bag, product)

    qty = np.where(company[line_order], rng.integers(2, 20, size), rng.geometric(0.78, size))
    qty = np.where(is_bag, 1 + (rng.random(size) < 0.2), qty)
    return _Lines(line_order, product, qty.astype(np.int64))


def _products_near_price(products: _Products, category: np.ndarray, target: np.ndarray) -> np.ndarray:
    """In each line's category, the product whose price is closest to the target price."""
    position = np.searchsorted(products.price_keys, category * PRICE_KEY_SPAN + target)
    first = products.category_first[category]
    last = first + products.category_count[category] - 1
    above = np.clip(position, first, last)
    below = np.clip(position - 1, first, last)
    below_is_closer = np.abs(products.price[below] - target) < np.abs(products.price[above] - target)
    return np.where(below_is_closer, below, above)


def _draw_discounts(rng: np.random.Generator, gross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Discount and promo code index per order: codes where the check qualifies, markdowns elsewhere."""
    orders = len(gross)
    code = rng.integers(0, len(PROMO_CODES), orders)
    amount, percent, min_check = (np.array([promo[i] for promo in PROMO_CODES]) for i in (1, 2, 3))
    uses_code = (rng.random(orders) < 0.07) & (gross >= min_check[code])
    code_discount = np.where(percent[code] > 0, gross * percent[code], amount[code])
    markdown = ~uses_code & (rng.random(orders) < 0.12)
    markdown_discount = gross * rng.uniform(0.05, 0.25, orders)
    discount = np.where(uses_code, code_discount, np.where(markdown, markdown_discount, 0.0))
    return np.round(np.minimum(discount, gross), 2), np.where(uses_code, code, -1)


def _loyalty_tiers(world: _World, customers: int, purchases: _Purchases, net: np.ndarray) -> np.ndarray:
    """Tier index per customer from completed spend over the last 365 days."""
    counts = (purchases.ts_s >= world.as_of_s - 365 * DAY) & (purchases.status == COMPLETED)
    spend = np.bincount(purchases.customer, weights=net * counts, minlength=customers)
    return np.searchsorted(np.array(TIER_THRESHOLDS), spend, side="right")


def _draw_bonus_spent(rng: np.random.Generator, purchases: _Purchases, net: np.ndarray,
                      tier: np.ndarray) -> np.ndarray:
    """Bonus points pay for up to 20% of some checks; higher tiers have more points to spend."""
    orders = len(purchases.customer)
    spend_rate = np.array([0.05, 0.2, 0.3])[tier[purchases.customer]]
    spends = (purchases.status == COMPLETED) & (rng.random(orders) < spend_rate)
    return np.where(spends, np.floor(net * rng.uniform(0.05, 0.2, orders)), 0.0)


@dataclass(frozen=True)
class _Returns:
    """Return orders (one per returned purchase) and their lines."""

    purchase: np.ndarray  # index of the purchase each return undoes
    ts_s: np.ndarray
    discount: np.ndarray
    total: np.ndarray
    lines: _Lines  # order = index into the returns


def _draw_returns(world: _World, rng: np.random.Generator, purchases: _Purchases,
                  lines: _Lines, money: _Money) -> _Returns:
    """Returns of some completed purchases: the first few lines come back within two weeks.

    A return has negative quantities and a negative total; its discount is the
    returned share of the original discount, negated, so that
    total = sum(qty * price) - discount holds for returns too.
    """
    orders = len(purchases.customer)
    return_rate = np.array([0.03, 0.07, 0.06])[purchases.channel]
    returned_ts = purchases.ts_s + rng.integers(2 * 3600, 14 * DAY, orders)
    purchase = np.flatnonzero((purchases.status == COMPLETED) & (rng.random(orders) < return_rate)
                              & (returned_ts < world.as_of_s))
    lines_per_order = np.bincount(lines.order, minlength=orders)
    first_line = np.cumsum(lines_per_order) - lines_per_order
    returned_lines = 1 + (rng.random(len(purchase)) * lines_per_order[purchase]).astype(np.int64)
    line = np.repeat(first_line[purchase], returned_lines) + _rank_in_group(returned_lines)
    line_return = _group_of_rows(returned_lines)

    amount = lines.qty[line] * world.products.price[lines.product[line]]
    returned_gross = np.bincount(line_return, weights=amount, minlength=len(purchase))
    discount = -np.round(money.discount[purchase] * returned_gross / money.gross[purchase], 2) + 0.0
    return _Returns(
        purchase=purchase,
        ts_s=returned_ts[purchase],
        discount=discount,  # the + 0.0 above turns -0.0 into 0.0
        total=np.round(-returned_gross - discount, 2),
        lines=_Lines(line_return, lines.product[line], -lines.qty[line]),
    )


def _sorted_orders(world: _World, profiles: _Profiles, purchases: _Purchases, lines: _Lines,
                   money: _Money, returns: _Returns, tier: np.ndarray) -> tuple[_Orders, _Lines]:
    """Purchases and returns together, ordered by (customer, ts), numbered per customer."""
    customer = np.concatenate([purchases.customer, purchases.customer[returns.purchase]])
    ts_s = np.concatenate([purchases.ts_s, returns.ts_s])
    order_sort = _sorted_order(customer, ts_s)
    position = np.empty_like(order_sort)
    position[order_sort] = np.arange(len(order_sort))

    def in_order(purchase_values: np.ndarray, return_values: np.ndarray) -> np.ndarray:
        return np.concatenate([purchase_values, return_values])[order_sort]

    def inherited(purchase_values: np.ndarray) -> np.ndarray:
        return in_order(purchase_values, purchase_values[returns.purchase])

    line_order = position[np.concatenate([lines.order, len(purchases.customer) + returns.lines.order])]
    line_sort = np.argsort(line_order, kind="stable")
    sorted_lines = _Lines(
        order=line_order[line_sort],
        product=np.concatenate([lines.product, returns.lines.product])[line_sort],
        qty=np.concatenate([lines.qty, returns.lines.qty])[line_sort],
    )
    orders = len(order_sort)
    lines_per_order = np.bincount(sorted_lines.order, minlength=orders)

    customer = customer[order_sort]
    per_customer = np.bincount(customer, minlength=len(profiles.customer_id))
    no_returns = len(returns.purchase)
    return _Orders(
        customer=customer,
        order_id=profiles.customer_id[customer] * ORDER_ID_STRIDE + _rank_in_group(per_customer),
        ts_s=ts_s[order_sort],
        channel=inherited(purchases.channel),
        store=inherited(purchases.store),
        status=in_order(purchases.status, np.full(no_returns, RETURNED)),
        total=in_order(money.total, returns.total),
        discount=in_order(money.discount, returns.discount),
        bonus_spent=in_order(money.bonus_spent, np.zeros(no_returns)),
        promo=in_order(money.promo, np.full(no_returns, -1)),
        items=np.bincount(sorted_lines.order, weights=sorted_lines.qty, minlength=orders).astype(np.int64),
        first_product=sorted_lines.product[np.cumsum(lines_per_order) - lines_per_order],
        per_customer=per_customer,
        tier=tier,
    ), sorted_lines


def _orders_table(profiles: _Profiles, orders: _Orders) -> pa.Table:
    return pa.table({
        "order_id": orders.order_id,
        "customer_id": profiles.customer_id[orders.customer],
        "ts": _timestamps(orders.ts_s),
        "channel": _strings(CHANNELS, orders.channel),
        "store_id": _nullable_ids(orders.store + 1, orders.store >= 0),
        "total": orders.total,
        "discount": orders.discount,
        "bonus_spent": orders.bonus_spent,
        "items": orders.items,
        "status": _strings(STATUSES, orders.status),
        "promo_code": _strings([promo[0] for promo in PROMO_CODES], orders.promo),
    }, schema=SCHEMAS["orders"])


def _order_lines_table(world: _World, orders: _Orders, lines: _Lines) -> pa.Table:
    return pa.table({
        "order_id": orders.order_id[lines.order],
        "product_id": lines.product + 1,
        "category": _strings(CATEGORY_NAMES, world.products.category[lines.product]),
        "qty": lines.qty,
        "price": world.products.price[lines.product],
    }, schema=SCHEMAS["order_lines"])


def _registered_before_first_order(rng: np.random.Generator, profiles: _Profiles,
                                   orders: _Orders) -> np.ndarray:
    """created_at, moved to shortly before the first order where that came first.

    Orders are drawn per day, so one can precede the signup time on the day of joining.
    """
    first_order = np.full(len(profiles.customer_id), np.iinfo(np.int64).max)
    has_orders = orders.per_customer > 0
    first_index = (np.cumsum(orders.per_customer) - orders.per_customer)[has_orders]
    first_order[has_orders] = orders.ts_s[first_index]
    before_first = first_order - rng.integers(60, 2 * 3600, len(first_order))
    return np.minimum(profiles.created_s, before_first)


# --------------------------------------------------------------------------
# Customers and consents.


def _customers_table(world: _World, rng: np.random.Generator, profiles: _Profiles,
                     tier: np.ndarray, created_s: np.ndarray) -> pa.Table:
    size = len(profiles.customer_id)
    female = rng.random(size) < 0.68  # home goods: most loyalty members are women
    name = np.where(female, rng.integers(0, len(FEMALE_NAMES), size),
                    len(FEMALE_NAMES) + rng.integers(0, len(MALE_NAMES), size))
    registered_online = ~profiles.buys | profiles.shops_online
    has_email = rng.random(size) < np.where(registered_online, 0.97, 0.8)
    has_phone = rng.random(size) < 0.9
    has_push_token = profiles.has_app & (rng.random(size) < 0.85)
    has_web_push = profiles.shops_online & (rng.random(size) < 0.25)
    has_birthday = rng.random(size) < 0.8
    as_of_day = world.as_of_s // DAY
    birthday = as_of_day - rng.integers(18 * 365, 75 * 365, size)
    city = profiles.city
    ids = pa.array(profiles.customer_id).cast(pa.string())

    email = _joined(_strings([latin for _, latin in FIRST_NAMES], name), ".", ids, "@",
                    _strings(EMAIL_DOMAINS, rng.integers(0, len(EMAIL_DOMAINS), size)))
    phone = _joined("+79", pc.utf8_lpad(pa.array(rng.integers(0, 10**9, size)).cast(pa.string()), 9, "0"))
    push_token = _joined("fcm:", pa.array(_hex_strings(rng, size, 32)).cast(pa.string()))
    web_push = _web_push_subscriptions(pa.array(_hex_strings(rng, size, 24)).cast(pa.string()))
    return pa.table({
        "customer_id": profiles.customer_id,
        "first_name": _strings([cyrillic for cyrillic, _ in FIRST_NAMES], name),
        "email": pc.if_else(has_email, email, None),
        "phone": pc.if_else(has_phone, phone, None),
        "push_token": pc.if_else(has_push_token, push_token, None),
        "web_push_endpoint": pc.if_else(has_web_push, web_push, None),
        "birthday": pa.array(birthday.astype(np.int32), pa.date32(), mask=~has_birthday),
        "city": _strings([c.name for c in CITIES], city),
        "timezone": _strings([c.timezone for c in CITIES], city),
        "home_store_id": profiles.home_store.astype(np.int64) + 1,
        "loyalty_tier": _strings(TIERS, tier),
        "created_at": _timestamps(created_s),
    }, schema=SCHEMAS["customers"])


# (channel, contact column, P(granted), P(revoked) with the contact, then without it).
# Consents without a contact are legacy imports: the reason `reachable` differs from `consent`.
CONSENT_RULES = (
    ("email", "email", 0.80, 0.08, 0.05, 0.02),
    ("sms", "phone", 0.70, 0.10, 0.03, 0.02),
    ("push", "push_token", 0.90, 0.06, 0.0, 0.04),  # revoked: notifications turned off, token gone
    ("web_push", "web_push_endpoint", 0.95, 0.03, 0.0, 0.0),
    ("whatsapp", "phone", 0.25, 0.03, 0.0, 0.0),
    ("telegram", "phone", 0.15, 0.02, 0.0, 0.0),
)
CONSENT_CHANGED_SHARE = 0.12  # consents with an earlier, opposite decision on record


def _consents_table(world: _World, rng: np.random.Generator, customers: pa.Table,
                    created_s: np.ndarray) -> pa.Table:
    """Per customer and channel: no row (never asked), or the decisions in time order."""
    size = customers.num_rows
    customer_parts, channel_parts, status_parts = [], [], []
    for channel, rule in enumerate(CONSENT_RULES):
        _, contact, granted_with, revoked_with, granted_without, revoked_without = rule
        has_contact = customers[contact].is_valid().to_numpy(zero_copy_only=False)
        granted = np.where(has_contact, granted_with, granted_without)
        revoked = np.where(has_contact, revoked_with, revoked_without)
        draw = rng.random(size)
        status = np.where(draw < granted, 0, np.where(draw < granted + revoked, 1, -1))
        decided = np.flatnonzero(status >= 0)
        customer_parts.append(decided)
        channel_parts.append(np.full(len(decided), channel))
        status_parts.append(status[decided])
    customer = np.concatenate(customer_parts)
    channel = np.concatenate(channel_parts)
    status = np.concatenate(status_parts)  # 0 granted, 1 revoked
    since_signup = world.as_of_s - created_s[customer]
    updated_s = created_s[customer] + (rng.random(len(customer)) * since_signup).astype(np.int64)

    # The earlier decision is strictly earlier, so "the latest consent" is never a tie.
    changed = np.flatnonzero((rng.random(len(customer)) < CONSENT_CHANGED_SHARE)
                             & (updated_s > created_s[customer]))
    earlier_s = created_s[customer[changed]] + (
        rng.random(len(changed)) * (updated_s[changed] - created_s[customer[changed]])).astype(np.int64)
    customer = np.concatenate([customer, customer[changed]])
    channel = np.concatenate([channel, channel[changed]])
    status = np.concatenate([status, 1 - status[changed]])
    updated_s = np.concatenate([updated_s, earlier_s])

    order = _sorted_order(customer, channel, updated_s)
    customer_ids = customers["customer_id"].to_numpy()
    return pa.table({
        "customer_id": customer_ids[customer[order]],
        "channel": _strings(CONSENT_CHANNELS, channel[order]),
        "status": _strings(("granted", "revoked"), status[order]),
        "updated_at": _timestamps(updated_s[order]),
    }, schema=SCHEMAS["consents"])


# --------------------------------------------------------------------------
# Site and app events.

SESSION_AGE_DAYS = 14  # mean age of a browsing session: events crowd into the last weeks
PRICE_DROP_CART_DAYS = 14  # carts this recent may see a price drop


@dataclass(frozen=True)
class _Events:
    customer: np.ndarray  # customer index within the chunk
    ts_s: np.ndarray
    type: np.ndarray
    product: np.ndarray  # product index, -1 for none
    category: np.ndarray  # category index, -1 for none
    payload: pa.Array  # JSON text or null


def _events(customer: np.ndarray, ts_s: np.ndarray, event_type: int, product: np.ndarray | None = None,
            category: np.ndarray | None = None, payload: pa.Array | None = None,
            products: _Products | None = None) -> _Events:
    """Events of one type; the category follows from the product when there is one."""
    size = len(customer)
    product = np.full(size, -1) if product is None else product
    if category is None:
        category = products.category[product] if products is not None else np.full(size, -1)
    return _Events(customer, np.asarray(ts_s, dtype=np.int64), np.full(size, event_type), product,
                   category, pa.nulls(size, pa.string()) if payload is None else payload)


def _events_table(world: _World, rng: np.random.Generator, profiles: _Profiles, orders: _Orders,
                  created_s: np.ndarray) -> pa.Table:
    session_events, session_carts = _browsing_sessions(world, rng, profiles, created_s)
    abandoned_views, abandoned_carts = _abandoned_carts(world, rng, profiles, orders)
    batches = [*session_events, session_carts, *_order_events(world, rng, orders),
               abandoned_views, abandoned_carts,
               _price_drops(world, rng, [session_carts, abandoned_carts])]
    customer = np.concatenate([batch.customer for batch in batches])
    ts_s = np.concatenate([batch.ts_s for batch in batches])
    event_type = np.concatenate([batch.type for batch in batches])
    product = np.concatenate([batch.product for batch in batches])
    category = np.concatenate([batch.category for batch in batches])
    payload = pa.concat_arrays([batch.payload for batch in batches])

    keep = (ts_s < world.as_of_s) & (ts_s >= created_s[customer])
    order = np.flatnonzero(keep)[_sorted_order(customer[keep], ts_s[keep], event_type[keep])]
    return pa.table({
        "customer_id": profiles.customer_id[customer[order]],
        "ts": _timestamps(ts_s[order]),
        "type": _strings(EVENT_TYPES, event_type[order]),
        "product_id": _nullable_ids(product[order] + 1, product[order] >= 0),
        "category": _strings(CATEGORY_NAMES, category[order]),
        "payload": payload.take(order),
    }, schema=SCHEMAS["events"])


def _browsing_sessions(world: _World, rng: np.random.Generator, profiles: _Profiles,
                       created_s: np.ndarray) -> tuple[list[_Events], _Events]:
    """Visits that look around: a visit or app opening, product and category views, sometimes a cart.

    Churned and never-buying customers browse too: "visited but did not buy".
    """
    products = world.products
    sessions = rng.poisson(profiles.engagement)
    customer = _group_of_rows(sessions)
    size = len(customer)
    max_age_s = np.minimum(EVENT_DAYS * DAY, world.as_of_s - created_s[customer]).clip(min=1)
    start_s = world.as_of_s - (rng.exponential(SESSION_AGE_DAYS * DAY, size) % max_age_s).astype(np.int64)
    in_app = profiles.has_app[customer] & ((rng.random(size) < 0.6) | ~profiles.shops_online[customer])
    visits = _events(customer[~in_app], start_s[~in_app], SITE_VISIT,
                     payload=_utm_payloads(rng, int((~in_app).sum())))
    app_opens = _events(customer[in_app], start_s[in_app], APP_OPENED)

    views_per_session = rng.poisson(2.0, size)
    session = _group_of_rows(views_per_session)
    views = len(session)
    view_s = start_s[session] + _cumsum_in_group(rng.uniform(20, 240, views), views_per_session).astype(np.int64)
    view_customer = customer[session]
    favourite = rng.random(views) < 0.5
    category = np.where(favourite, profiles.favourite_category[view_customer],
                        _pick(rng, FAVOURITE_WEIGHTS, views))
    product = _any_product_of(rng, products, category)
    is_product_view = rng.random(views) < 0.75
    product_views = _events(view_customer[is_product_view], view_s[is_product_view], PRODUCT_VIEWED,
                            product[is_product_view], products=products)
    category_views = _events(view_customer[~is_product_view], view_s[~is_product_view], CATEGORY_VIEWED,
                             category=category[~is_product_view])

    # A cart takes the product of the session's last view, when that was a product.
    last_view = (np.cumsum(views_per_session) - 1)[views_per_session > 0]
    carted = last_view[is_product_view[last_view] & (rng.random(len(last_view)) < 0.3)]
    carts = _events(view_customer[carted], view_s[carted] + rng.integers(10, 180, len(carted)),
                    CART_UPDATED, product[carted], payload=_cart_payloads(rng, len(carted)),
                    products=products)
    return [visits, app_opens, product_views, category_views], carts


def _order_events(world: _World, rng: np.random.Generator, orders: _Orders) -> list[_Events]:
    """The clicks behind recent online and app orders: open, view, cart, order_placed."""
    recent = np.flatnonzero((orders.channel != OFFLINE) & (orders.status != RETURNED)
                            & (orders.ts_s >= world.as_of_s - EVENT_DAYS * DAY))
    customer = np.repeat(np.arange(len(orders.per_customer)), orders.per_customer)[recent]
    ts_s = orders.ts_s[recent]
    product = orders.first_product[recent]
    size = len(recent)
    in_app = orders.channel[recent] == APP
    opened_s = ts_s - rng.integers(1800, 2400, size)
    products = world.products
    return [
        _events(customer[~in_app], opened_s[~in_app], SITE_VISIT,
                payload=_utm_payloads(rng, int((~in_app).sum()))),
        _events(customer[in_app], opened_s[in_app], APP_OPENED),
        _events(customer, ts_s - rng.integers(300, 1800, size), PRODUCT_VIEWED, product, products=products),
        _events(customer, ts_s - rng.integers(60, 300, size), CART_UPDATED, product,
                payload=_cart_payloads(rng, size), products=products),
        _events(customer, ts_s, ORDER_PLACED, product,
                payload=_joined('{"order_id":', pa.array(orders.order_id[recent]).cast(pa.string()), "}"),
                products=products),
    ]


def _abandoned_carts(world: _World, rng: np.random.Generator, profiles: _Profiles,
                     orders: _Orders) -> tuple[_Events, _Events]:
    """Carts filled in the last six hours with no order since: the abandoned-cart audience."""
    last_order_s = np.full(len(profiles.customer_id), np.iinfo(np.int64).min)
    has_orders = orders.per_customer > 0
    last_order_s[has_orders] = orders.ts_s[(np.cumsum(orders.per_customer) - 1)[has_orders]]
    digital = profiles.engagement > 0
    candidates = np.flatnonzero(digital & (rng.random(len(digital)) < 0.03))
    cart_s = world.as_of_s - rng.integers(20 * 60, 6 * 3600, len(candidates))
    keep = cart_s > last_order_s[candidates]
    customer, cart_s = candidates[keep], cart_s[keep]
    size = len(customer)
    products = world.products
    category = profiles.favourite_category[customer]
    product = _any_product_of(rng, products, category)
    views = _events(customer, cart_s - rng.integers(60, 600, size), PRODUCT_VIEWED, product, products=products)
    carts = _events(customer, cart_s, CART_UPDATED, product, payload=_cart_payloads(rng, size), products=products)
    return views, carts


def _price_drops(world: _World, rng: np.random.Generator, cart_batches: list[_Events]) -> _Events:
    """Price drops on products in recent carts, after they were carted.

    The new price is the product's current catalogue price, the old one higher.
    """
    customer = np.concatenate([batch.customer for batch in cart_batches])
    cart_s = np.concatenate([batch.ts_s for batch in cart_batches])
    product = np.concatenate([batch.product for batch in cart_batches])
    dropped = np.flatnonzero((cart_s >= world.as_of_s - PRICE_DROP_CART_DAYS * DAY)
                             & (cart_s < world.as_of_s - 60) & (rng.random(len(cart_s)) < 0.3))
    size = len(dropped)
    drop_s = cart_s[dropped] + (rng.random(size) * (world.as_of_s - cart_s[dropped])).astype(np.int64)
    new_price = world.products.price[product[dropped]]
    old_price = np.maximum(np.round(new_price * rng.uniform(1.1, 1.4, size), -1) - 1, new_price + 10)
    payload = _joined('{"old_price":', pa.array(old_price.astype(np.int64)).cast(pa.string()),
                      ',"new_price":', pa.array(new_price.astype(np.int64)).cast(pa.string()), "}")
    return _events(customer[dropped], drop_s, PRICE_DROPPED, product[dropped], payload=payload,
                   products=world.products)


def _any_product_of(rng: np.random.Generator, products: _Products, category: np.ndarray) -> np.ndarray:
    """A product drawn uniformly from each given category: browsing ignores price."""
    return products.category_first[category] + (
        rng.random(len(category)) * products.category_count[category]).astype(np.int64)


def _utm_payloads(rng: np.random.Generator, size: int) -> pa.Array:
    payloads = [f'{{"utm_source":"{source}"}}' for source in UTM_SOURCES]
    return _strings(payloads, _pick(rng, UTM_WEIGHTS, size))


def _cart_payloads(rng: np.random.Generator, size: int) -> pa.Array:
    return _strings(['{"qty":1}', '{"qty":2}', '{"qty":3}'], _pick(rng, np.array([0.8, 0.15, 0.05]), size))
