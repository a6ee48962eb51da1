"""The data contract (docs/format.md) as data, and the check that a source meets it.

Segments are compiled against logical names; a project maps them to the
physical names of its warehouse with ``data_source.tables``. Checking the
source up front turns "column not found" deep inside a generated query into
one located message per missing piece, with the mapping that would fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from .contracts import DataSource
from .diagnostics import Diagnostic
from .model import DataSourceConfig


@dataclass(frozen=True)
class LogicalColumn:
    name: str
    type: str  # "integer" | "number" | "text" | "date" | "timestamp" | "boolean" | "json"
    required: bool = True


def _table(*columns: LogicalColumn) -> Mapping[str, LogicalColumn]:
    return MappingProxyType({column.name: column for column in columns})


C = LogicalColumn

# The values the contract allows in its coded columns (docs/format.md).
ORDER_CHANNELS = ("online", "offline", "app")
ORDER_STATUSES = ("completed", "returned", "cancelled")
CONSENT_CHANNELS = ("email", "sms", "push", "web_push", "whatsapp", "telegram")
CONSENT_STATUSES = ("granted", "revoked")
EVENT_TYPES = ("product_viewed", "category_viewed", "cart_updated", "price_dropped", "site_visit", "app_opened", "order_placed")
LOYALTY_TIERS = ("basic", "silver", "gold")

# Optional columns are ones no built-in condition or feature reads; the rest
# are required so that a source that validates can run every segment.
CONTRACT: Mapping[str, Mapping[str, LogicalColumn]] = MappingProxyType(
    {
        "customers": _table(
            C("customer_id", "integer"),
            C("first_name", "text"),
            C("email", "text"),
            C("phone", "text"),
            C("push_token", "text"),
            C("web_push_endpoint", "text"),
            C("birthday", "date"),
            C("city", "text"),
            C("timezone", "text"),
            C("home_store_id", "integer"),
            C("loyalty_tier", "text"),
            C("created_at", "timestamp"),
        ),
        "consents": _table(
            C("customer_id", "integer"),
            C("channel", "text"),
            C("status", "text"),
            C("updated_at", "timestamp"),
        ),
        "orders": _table(
            C("order_id", "integer"),
            C("customer_id", "integer"),
            C("ts", "timestamp"),
            C("channel", "text"),
            C("store_id", "integer"),
            C("total", "number"),
            C("discount", "number"),
            C("bonus_spent", "number"),
            C("items", "integer"),
            C("status", "text"),
            C("promo_code", "text", required=False),
        ),
        "order_lines": _table(
            C("order_id", "integer"),
            C("product_id", "integer"),
            C("category", "text"),
            C("qty", "number"),
            C("price", "number"),
        ),
        "products": _table(
            C("product_id", "integer"),
            C("name", "text"),
            C("category", "text"),
            C("price", "number"),
            C("in_stock", "boolean"),
        ),
        "stores": _table(
            C("store_id", "integer"),
            C("name", "text"),
            C("city", "text"),
            C("mall", "text"),
            C("lat", "number", required=False),
            C("lon", "number", required=False),
        ),
        "events": _table(
            C("customer_id", "integer"),
            C("ts", "timestamp"),
            C("type", "text"),
            C("product_id", "integer"),
            C("category", "text"),
            C("payload", "json", required=False),
        ),
    }
)


def column_type(table: str, column: str) -> str | None:
    found = CONTRACT.get(table, {}).get(column)
    return found.type if found else None


def check_source(config: DataSourceConfig, source: DataSource) -> list[Diagnostic]:
    """Every required table and column of the contract, after mapping, is there.
    All problems are reported at once, at the data_source settings."""
    diagnostics: list[Diagnostic] = []
    for table, columns in CONTRACT.items():
        mapping = config.table(table)
        present = source.table_columns(mapping.table)
        if present is None:
            diagnostics.append(_missing_table(config, table, mapping.table))
            continue
        present_lower = {name.lower() for name in present}
        for column in columns.values():
            physical = mapping.column(column.name)
            if column.required and physical.lower() not in present_lower:
                diagnostics.append(_missing_column(config, table, mapping.table, column.name, physical, present))
    return diagnostics


def _named(kind: str, physical: str, logical: str) -> str:
    """"table 'sales' (logical table 'orders')", or just "table 'orders'"."""
    return f"{kind} {physical!r}" if physical == logical else f"{kind} {physical!r} (logical {kind} {logical!r})"


def _missing_table(config: DataSourceConfig, table: str, physical: str) -> Diagnostic:
    shown = _named("table", physical, table)
    return Diagnostic(
        config.location,
        "data_source",
        f"the data source has no {shown}",
        f"provide it, or map it to the real table name with data_source.tables.{table}.table in campaignctl.yaml",
    )


def _missing_column(config: DataSourceConfig, table: str, physical_table: str, column: str, physical: str, present: list[str]) -> Diagnostic:
    shown = _named("column", physical, column)
    where = _named("table", physical_table, table)
    return Diagnostic(
        config.location,
        "data_source",
        f"{where} has no {shown}; it has: {', '.join(present) or 'no columns'}",
        f"map it with data_source.tables.{table}.columns.{column} in campaignctl.yaml",
    )
