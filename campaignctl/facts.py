"""Per-customer facts the planner needs beyond segment membership: how to reach
a customer (contacts, latest consent per channel kind), their time zone, and
the dates that drive suppression, goals and triggers.

A plan reads them in the segments query: ``evaluate_segments(...,
columns=FACT_COLUMNS)`` returns them beside the segments from the same scans
of customers, consents and orders, and :func:`facts_from_audiences` keeps the
wanted customers' and adds the latest trigger events (a small query of their
own). :func:`load_customer_facts` reads them alone, with one dialect-neutral
query built with sqlglot and transpiled to the source's dialect (consents by
the segments' own definition); the project's table/column mapping applies as
for segments. Tests build :class:`CustomerFacts` directly with
:meth:`CustomerFacts.from_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow
from sqlglot import exp

from .arrays import IdIndex, distinct_ids, locate, lookup
from .datacontract import CONSENT_CHANNELS
from .model import Project
from .segments import CustomerColumns
from .segments.compiler import SourceNames, in_ids, latest_consents
from .segments.conditions import Aggregate

if TYPE_CHECKING:
    from .contracts import DataSource
    from .segments import Audiences

UTC = timezone.utc

CONTACT_COLUMNS = ("email", "phone", "push_token", "web_push_endpoint")
CONSENT_KINDS = CONSENT_CHANNELS
# The contact a channel kind delivers to; web_layer needs none (shown on the site).
CONTACT_FOR_KIND: Mapping[str, str] = {
    "email": "email",
    "sms": "phone",
    "whatsapp": "phone",
    "telegram": "phone",
    "push": "push_token",
    "web_push": "web_push_endpoint",
}
NO_CONTACT_NEEDED = frozenset({"web_layer"})

TIMESTAMP = pyarrow.timestamp("us", tz="UTC")
SCHEMA = pyarrow.schema(
    [pyarrow.field("customer_id", pyarrow.int64(), nullable=False)]
    + [pyarrow.field(name, pyarrow.string()) for name in CONTACT_COLUMNS]
    + [pyarrow.field("timezone", pyarrow.string())]
    + [pyarrow.field(f"consent_{kind}", pyarrow.bool_()) for kind in CONSENT_KINDS]
    + [pyarrow.field(name, TIMESTAMP) for name in ("created_at", "first_order_at", "last_order_at")]
)
COMPLETED_ORDERS = (("status", ("completed",)),)
# SCHEMA's columns but customer_id, as the segments query reads them.
FACT_COLUMNS = CustomerColumns(
    fields=CONTACT_COLUMNS + ("timezone", "created_at"),
    consents=CONSENT_KINDS,
    aggregates=(("first_order_at", Aggregate("orders", "first_ts", None, COMPLETED_ORDERS)),
                ("last_order_at", Aggregate("orders", "last_ts", None, COMPLETED_ORDERS))),
)
# The latest event of each type per customer, for event triggers and their `unless`.
EVENTS_SCHEMA = pyarrow.schema([
    pyarrow.field("customer_id", pyarrow.int64(), nullable=False),
    pyarrow.field("type", pyarrow.string(), nullable=False),
    pyarrow.field("ts", TIMESTAMP, nullable=False),
])


@dataclass(frozen=True)
class CustomerFact:
    """One customer's facts, as the planner reads them."""

    customer_id: int
    contacts: Mapping[str, str | None]  # email, phone, push_token, web_push_endpoint
    timezone: str | None
    consents: Mapping[str, bool]  # channel kind -> latest consent is granted
    created_at: datetime | None
    first_order_at: datetime | None
    last_order_at: datetime | None

    def reachable(self, kind: str) -> str | None:
        """None when a message of this channel kind can reach the customer,
        else why not: "no_consent" or "no_contact"."""
        if kind in NO_CONTACT_NEEDED:
            return None
        if not self.consents.get(kind, False):
            return "no_consent"
        if not self.contacts.get(CONTACT_FOR_KIND.get(kind, ""), None):
            return "no_contact"
        return None


@dataclass(frozen=True)
class CustomerFacts:
    """A table of per-customer facts (:data:`SCHEMA`) and, optionally, the latest
    trigger events per customer and type (:data:`EVENTS_SCHEMA`)."""

    table: pyarrow.Table
    events: pyarrow.Table = field(default_factory=lambda: EVENTS_SCHEMA.empty_table())

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", _conform(self.table, SCHEMA))
        object.__setattr__(self, "events", _conform(self.events, EVENTS_SCHEMA))

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]] = ()) -> "CustomerFacts":
        """Facts from plain dicts; missing keys are null (no contact, no consent).
        ``consents`` may be given as a mapping kind -> bool instead of consent_* keys."""
        prepared = []
        for row in rows:
            row = dict(row)
            for kind, granted in dict(row.pop("consents", {}) or {}).items():
                row[f"consent_{kind}"] = bool(granted)
            prepared.append({name: _utc(row.get(name)) for name in SCHEMA.names})
        event_rows = [{name: _utc(dict(row).get(name)) for name in EVENTS_SCHEMA.names} for row in events]
        return cls(pyarrow.Table.from_pylist(prepared, schema=SCHEMA), pyarrow.Table.from_pylist(event_rows, schema=EVENTS_SCHEMA))

    def __len__(self) -> int:
        return self.table.num_rows

    def get(self, customer_id: int) -> CustomerFact | None:
        """One customer's facts, built on first use (a plan reads few of them
        whole; the bulk questions have the vectorised methods below)."""
        customer_id = int(customer_id)
        fact = self._built.get(customer_id)
        if fact is None:
            row = self.row_of(customer_id)
            if row < 0:
                return None
            fact = self._built[customer_id] = self._fact(row)
        return fact

    def latest_event(self, customer_id: int, event_type: str) -> datetime | None:
        return self._events.get((int(customer_id), event_type))

    def rows_of(self, customer_ids: np.ndarray) -> np.ndarray:
        """The table row of each of ``customer_ids``; -1 where the table lacks one."""
        return self._index.lookup(customer_ids, -1)

    def row_of(self, customer_id: int) -> int:
        """The customer's table row; -1 when the table lacks one."""
        return self._index.get(int(customer_id), -1)

    def last_order_at(self, customer_id: int) -> datetime | None:
        """The customer's latest completed order (None when none or not in the table)."""
        row = self.row_of(customer_id)
        return None if row < 0 else from_micros(self._micros["last_order_at"][row])

    def timezone(self, customer_id: int) -> str | None:
        """The customer's time zone fact (None when unknown or not in the table)."""
        row = self.row_of(customer_id)
        return None if row < 0 else (self.table.column("timezone")[row].as_py() or None)

    def inactive_rows(self, now: datetime, days: int | None) -> np.ndarray:
        """Per table row, whether the customer is inactive (suppressed by
        policies.suppress_inactive_days): no order for more than ``days`` days
        before ``now``; customers who never ordered count from their
        created_at. Unknown dates never suppress."""
        if days is None:
            return np.zeros(self.table.num_rows, dtype=bool)
        return self._last_active_micros < to_micros(now) - days * 86_400_000_000

    @cached_property
    def _last_active_micros(self) -> np.ndarray:
        """Per table row, the latest order, else created_at, in µs; the largest
        int64 where neither is known (never inactive). Once: a plan asks at
        several instants (~20 ms a question at 1M)."""
        last_order, created = self._micros["last_order_at"], self._micros["created_at"]
        last = np.where(last_order != NO_TIME, last_order, created)
        last[last == NO_TIME] = np.iinfo(np.int64).max
        return last

    def last_order_micros(self, rows: np.ndarray) -> np.ndarray:
        """The latest completed order of each table row in ``rows`` as µs since
        the epoch; :data:`NO_TIME` where none (or the row is -1)."""
        rows = np.asarray(rows, dtype=np.int64)
        found = self._micros["last_order_at"][np.where(rows >= 0, rows, 0)] if len(self.table) else np.full(len(rows), NO_TIME)
        return np.where(rows >= 0, found, NO_TIME)

    def latest_event_micros(self, event_type: str, customer_ids: np.ndarray) -> np.ndarray:
        """:meth:`latest_event` for many customers, as µs since the epoch; :data:`NO_TIME` where none."""
        ids, times = self._event_columns(event_type)
        return lookup(ids, times, customer_ids, NO_TIME)

    def timezone_rows(self) -> tuple[np.ndarray, tuple[str | None, ...]]:
        """Per table row, a code of its time zone fact, and the zone (None:
        unknown) each code stands for."""
        import pyarrow.compute as pc

        encoded = pc.fill_null(self.table.column("timezone"), "").combine_chunks().dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)  # int32, as Arrow numbers them: a copy to int64 took ~60 ms at 1M
        return codes, tuple(zone or None for zone in encoded.dictionary.to_pylist())

    def reach_rows(self, kinds: Sequence[str]) -> np.ndarray:
        """Per table row, a code of :meth:`CustomerFact.reachable` over ``kinds``:
        rows with equal codes are reachable (or not, and why) on the same kinds.
        Decode with :func:`reach_reasons`."""
        code = np.zeros(self.table.num_rows, dtype=np.int64)
        for position, kind in enumerate(kinds):
            if kind in NO_CONTACT_NEEDED:
                continue
            consent = self._column(f"consent_{kind}")
            granted = consent.fill_null(False).to_numpy(zero_copy_only=False).astype(bool) if consent is not None else np.zeros(len(code), bool)
            contact = self._has_contact(CONTACT_FOR_KIND.get(kind, ""))
            # 0: no consent, 1: consent but no contact, 2: reachable; each gathers
            # its reach_reasons digit (1, 2, 0) times the kind's weight: no int64
            # temporaries per kind.
            state = granted.view(np.int8) * (1 + contact.view(np.int8))
            code += np.array([3 ** position, 2 * 3 ** position, 0], dtype=np.int64)[state]
        return code

    def _column(self, name: str) -> pyarrow.ChunkedArray | None:
        return self.table.column(name) if name in self.table.column_names else None

    def _has_contact(self, name: str) -> np.ndarray:
        """Per table row, whether the contact is there; once per column (the phone serves three kinds)."""
        if name not in self._presence:
            column = self._column(name)
            if column is None:
                self._presence[name] = np.zeros(self.table.num_rows, dtype=bool)
            else:
                import pyarrow.compute as pc

                # Byte length: from the offsets alone (utf8_length reads every string: ~50 ms a column at 1M).
                self._presence[name] = pc.fill_null(pc.greater(pc.binary_length(column), 0), False).to_numpy(zero_copy_only=False).astype(bool)
        return self._presence[name]

    @cached_property
    def _presence(self) -> dict[str, np.ndarray]:
        return {}

    def _fact(self, row: int) -> CustomerFact:
        # One row out of Arrow: a plan reads a few thousand facts whole, and
        # turning every customer's strings into Python objects took ~0.3 s at 1M.
        values = self.table.slice(row, 1).to_pylist()[0]
        return CustomerFact(
            customer_id=int(values["customer_id"]),
            contacts={name: values[name] for name in CONTACT_COLUMNS},
            timezone=values["timezone"] or None,
            consents={kind: bool(values[f"consent_{kind}"]) for kind in CONSENT_KINDS},
            created_at=from_micros(self._micros["created_at"][row]),
            first_order_at=from_micros(self._micros["first_order_at"][row]),
            last_order_at=from_micros(self._micros["last_order_at"][row]),
        )

    @cached_property
    def _built(self) -> dict[int, CustomerFact]:
        return {}

    @cached_property
    def _index(self) -> IdIndex:
        """Customer id -> table row; a loaded table is in id order already, a kept one may not be."""
        return IdIndex.of_positions(self.table.column("customer_id").to_numpy())

    @cached_property
    def _micros(self) -> dict[str, np.ndarray]:
        """Timestamps as microseconds since the epoch, nulls as NO_TIME."""
        return {name: self.table.column(name).cast(pyarrow.int64()).fill_null(NO_TIME).to_numpy()
                for name in ("created_at", "first_order_at", "last_order_at")}

    def _event_columns(self, event_type: str) -> tuple[np.ndarray, np.ndarray]:
        """(sorted customer ids, their latest ``event_type`` in µs), built once per type."""
        cache = self._event_arrays
        if event_type not in cache:
            import pyarrow.compute as pc

            chosen = self.events.filter(pc.equal(self.events.column("type"), event_type))
            ids = chosen.column("customer_id").to_numpy()
            times = chosen.column("ts").cast(pyarrow.int64()).to_numpy()
            order = np.lexsort((times, ids))
            ids, times = ids[order], times[order]
            last = np.r_[ids[1:] != ids[:-1], True] if len(ids) else np.empty(0, dtype=bool)
            cache[event_type] = (ids[last], times[last])
        return cache[event_type]

    @cached_property
    def _event_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {}

    @cached_property
    def _events(self) -> dict[tuple[int, str], datetime]:
        latest: dict[tuple[int, str], datetime] = {}
        ids, types, times = (self.events.column(name).to_pylist() for name in EVENTS_SCHEMA.names)
        for customer_id, event_type, ts in zip(ids, types, times):
            key = (customer_id, event_type)
            if key not in latest or ts > latest[key]:
                latest[key] = ts
        return latest


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_TIME = np.iinfo(np.int64).min  # "no such time" in the µs columns


def to_micros(moment: datetime | None) -> int:
    """A UTC-aware instant as µs since the epoch (:data:`NO_TIME` for None): the unit of the fact columns."""
    return NO_TIME if moment is None else (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime | None:
    """The inverse of :func:`to_micros` (UTC)."""
    return None if micros == NO_TIME else _EPOCH + timedelta(microseconds=int(micros))


def reach_reasons(code: int, kinds: Sequence[str]) -> tuple[str | None, ...]:
    """The per-kind reasons (None, "no_consent", "no_contact") a reach code stands for."""
    return tuple((None, "no_consent", "no_contact")[(code // 3 ** position) % 3] for position in range(len(kinds)))


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _conform(table: pyarrow.Table, schema: pyarrow.Schema) -> pyarrow.Table:
    """``table`` with exactly ``schema``'s columns, in order, cast; absent columns null."""
    columns = []
    for schema_field in schema:
        if schema_field.name in table.column_names:
            column = table.column(schema_field.name)
            if column.type != schema_field.type:
                column = column.cast(schema_field.type)
        else:
            column = pyarrow.nulls(table.num_rows, schema_field.type)
        columns.append(column)
    return pyarrow.Table.from_arrays(columns, schema=schema)


# --------------------------------------------------------------------------- loading


def trigger_event_types(project: Project) -> tuple[str, ...]:
    """Event types the project's triggered campaigns enrol on or exit by."""
    found = set()
    for campaign in project.campaigns.values():
        trigger = campaign.spec.get("trigger") or {}
        if "event" in trigger:
            found.add(trigger["event"])
        found.update(kind for kind in trigger.get("unless", ()) if kind != "order")
    return tuple(sorted(found))


def event_lookback(project: Project) -> timedelta:
    """How far back a trigger event still enrols: the longest delay plus a day."""
    from .segments.periods import parse_duration

    longest = timedelta(0)
    for campaign in project.campaigns.values():
        trigger = campaign.spec.get("trigger") or {}
        delays = [trigger.get("delay", "0")] + [arm.delay for arm in campaign.arms if arm.delay]
        longest = max([longest] + [parse_duration(delay) for delay in delays])
    return longest + timedelta(days=1)


def load_customer_facts(project: Project, source: DataSource, customer_ids: Sequence[int] | None, now: datetime) -> CustomerFacts:
    """Facts for ``customer_ids`` (None: every customer) as of ``now``."""
    now = _utc(now).astimezone(UTC)
    ids = None if customer_ids is None else distinct_ids(customer_ids)
    in_sql, left = _split_selection(ids)
    # The query leaves the order to us: one take here both orders and keeps rows,
    # cheaper than the engine sorting wide rows.
    table = _keep(source.query(facts_query(project, source, in_sql, now)), left, order=True)
    return CustomerFacts(table, _trigger_events(project, source, in_sql, left, now))


def facts_from_audiences(project: Project, source: DataSource, audiences: Audiences, customer_ids: Sequence[int], now: datetime) -> CustomerFacts:
    """Facts for ``customer_ids`` as of ``now`` from ``audiences`` evaluated with
    ``columns=FACT_COLUMNS`` (every customer's facts, read with the segments),
    plus the latest trigger events: :func:`load_customer_facts`'s, except that
    when most customers are wanted, the table keeps every customer's row in
    the query's order (copying a million rows to drop a few, or to sort them,
    took ~0.5 s; the facts answer by customer id whatever the order)."""
    if audiences.columns is None:
        raise ValueError("the audiences carry no facts: evaluate the segments with columns=FACT_COLUMNS")
    now = _utc(now).astimezone(UTC)
    ids = distinct_ids(customer_ids)
    table = audiences.columns
    if 2 * len(ids) < table.num_rows:  # few wanted: keep theirs, so that per-row work stays small
        table = _keep(table, ids, order=True)
    in_sql, left = _split_selection(ids)
    return CustomerFacts(table, _trigger_events(project, source, in_sql, left, now))


IN_LIST_LIMIT = 2000


def _split_selection(ids: np.ndarray | None) -> tuple[list[int] | None, np.ndarray | None]:
    """(the ids for the query's IN list, the ids to keep from its rows here);
    None where that side keeps every customer. A long IN list costs more to
    generate and parse than reading every customer; past a few thousand ids,
    read all and keep the wanted rows here."""
    if ids is not None and len(ids) <= IN_LIST_LIMIT:
        return ids.tolist(), None
    return None, ids


def _trigger_events(project: Project, source: DataSource, in_sql: list[int] | None, left: np.ndarray | None, now: datetime) -> pyarrow.Table:
    """The latest event of each trigger type per customer (:data:`EVENTS_SCHEMA`), empty when no campaign triggers on events."""
    types = trigger_event_types(project)
    if not types:
        return EVENTS_SCHEMA.empty_table()
    return _keep(source.query(events_query(project, source.dialect, in_sql, types, now - event_lookback(project), now)), left)


def _keep(table: pyarrow.Table, ids: np.ndarray | None, order: bool = False) -> pyarrow.Table:
    """``table``'s rows of ``ids`` (sorted; all rows when None), in customer_id
    order (stable) when ``order``."""
    select = ids is not None
    column = table.column("customer_id")
    if column.null_count:  # not in sound data; Arrow's kernels then do as SQL would (nulls last, never wanted)
        import pyarrow.compute as pc

        if order:
            table = table.take(pc.sort_indices(column))  # stable, nulls at the end
        if select:
            table = table.filter(pc.is_in(table.column("customer_id"), value_set=pyarrow.array(ids, pyarrow.int64())))
        return table
    have = column.to_numpy()
    rows = None
    if order and len(have) > 1 and not bool(np.all(have[1:] >= have[:-1])):
        rows = np.argsort(have, kind="stable")
        have = have[rows]
    if select:
        wanted = locate(ids, have) >= 0
        if not wanted.all():
            rows = np.flatnonzero(wanted) if rows is None else rows[wanted]
    return table if rows is None else table.take(rows)


def facts_query(project: Project, source: DataSource, customer_ids: Sequence[int] | None, now: datetime) -> str:
    """One SELECT of :data:`SCHEMA`'s columns, in ``source.dialect``, in no
    particular order (:func:`load_customer_facts` orders the rows)."""
    names = SourceNames(project.data_source)
    present = source.table_columns(project.data_source.table("customers").table)

    def customer(logical: str) -> exp.Expression:
        # Contacts and timezone are optional in a source; a missing column is null.
        return names.col("c", "customers", logical) if names.has_column("customers", logical, present) else exp.Null()

    def wanted(alias: str, logical: str) -> list[exp.Expression]:
        # Also in the aggregates: a few customers' facts need not aggregate everyone's rows.
        return [] if customer_ids is None else [in_ids(names.col(alias, logical, "customer_id"), customer_ids)]

    # Consents exactly as segments read them (one definition, latest_consents).
    consents = latest_consents(names, CONSENT_KINDS, now, source.dialect, customer_ids)

    def consent(kind: str) -> exp.Expression:
        return exp.Coalesce(this=exp.column(kind, table="k", quoted=True), expressions=[exp.Literal.number(0)])

    o = "o"
    orders = (
        exp.select(names.col(o, "orders", "customer_id").as_("customer_id"),
                   exp.alias_(exp.Min(this=names.col(o, "orders", "ts")), "first_order_at"),
                   exp.alias_(exp.Max(this=names.col(o, "orders", "ts")), "last_order_at"))
        .from_(names.table("orders", o))
        .where(exp.and_(exp.EQ(this=names.col(o, "orders", "status"), expression=exp.Literal.string("completed")),
                        exp.LTE(this=names.col(o, "orders", "ts"), expression=_timestamp(now)), *wanted(o, "orders")))
        .group_by(names.col(o, "orders", "customer_id"))
    )

    c = "c"
    customer_id = names.col(c, "customers", "customer_id")
    columns: list[exp.Expression] = [exp.alias_(customer_id, "customer_id", quoted=True)]
    columns += [exp.alias_(customer(name), name, quoted=True) for name in CONTACT_COLUMNS + ("timezone",)]
    columns += [exp.alias_(consent(kind), f"consent_{kind}", quoted=True) for kind in CONSENT_KINDS]
    columns += [exp.alias_(customer("created_at"), "created_at", quoted=True)]
    columns += [exp.alias_(exp.column(name, table="o", quoted=True), name, quoted=True) for name in ("first_order_at", "last_order_at")]
    query = (
        exp.select(*columns)
        .from_(names.table("customers", c))
        .join(consents.subquery("k"), on=exp.EQ(this=exp.column("customer_id", table="k"), expression=customer_id.copy()), join_type="left")
        .join(orders.subquery("o"), on=exp.EQ(this=exp.column("customer_id", table="o"), expression=customer_id.copy()), join_type="left")
    )
    if customer_ids is not None:
        query = query.where(*wanted(c, "customers"))
    return query.sql(dialect=source.dialect)


def events_query(project: Project, dialect: str, customer_ids: Sequence[int] | None, types: Sequence[str], since: datetime, now: datetime) -> str:
    """The latest event of each of ``types`` per customer in (since, now]."""
    mapping = project.data_source

    def col(logical: str) -> exp.Column:
        return exp.column(mapping.table("events").column(logical), table="e", quoted=True)

    conditions = [
        _in(col("type"), types),
        exp.GT(this=col("ts"), expression=_timestamp(since)),
        exp.LTE(this=col("ts"), expression=_timestamp(now)),
    ]
    if customer_ids is not None:
        conditions.append(in_ids(col("customer_id"), customer_ids))
    query = (
        exp.select(exp.alias_(col("customer_id"), "customer_id", quoted=True), exp.alias_(col("type"), "type", quoted=True),
                   exp.alias_(exp.Max(this=col("ts")), "ts", quoted=True))
        .from_(exp.to_table(mapping.table("events").table, alias="e"))
        .where(exp.and_(*conditions))
        .group_by(col("customer_id"), col("type"))
        .order_by(exp.column("customer_id", quoted=True), exp.column("type", quoted=True))
    )
    return query.sql(dialect=dialect)


def _timestamp(value: datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMPTZ")


def _in(expression: exp.Expression, values: Sequence[Any]) -> exp.Expression:
    if not values:
        return exp.false()
    literals = [exp.Literal.number(v) if isinstance(v, int) else exp.Literal.string(str(v)) for v in values]
    return exp.In(this=expression, expressions=literals)
