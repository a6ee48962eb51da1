"""Segments -> one SQL query, built as a sqlglot AST.

The query has four layers, each a CTE:

1. ``<table>_agg``: every distinct aggregate any requested segment or feature
   needs, computed in ONE pass per source table (orders, order_lines joined to
   orders, events) as ``agg(...) FILTER (WHERE ...)`` grouped by customer;
2. ``customer_facts``: customers LEFT JOIN those aggregates (count and sum of
   nothing are 0), plus per-customer lookups (favourite category, main store:
   best candidate per customer by ARG_MIN/ARG_MAX, no window on DuckDB and
   Spark; latest consents: one GROUP BY; price drops in the cart);
3. ``<feature>_edges``: population statistics, one row each (quantile edges
   with continuous interpolation, IQR fences), so scores depend on values only;
4. ``customer_features``: facts plus feature columns;

and the final SELECT adds one non-null boolean per segment (a comparison with
NULL is false; segment references are inlined), and the per-customer values a
caller asked for (``CustomerColumns``: the planner's facts read this way).

Every time boundary is computed from ``now`` in Python and rendered as a
literal, so the query is a pure function of the project and ``now``. Calendar
days (days since, weekday, distinct days) are the project time zone's, by
UTC-offset arithmetic that gives the same integers on every dialect whatever
the session time zone (``QueryBuilder.local_day``). docs/segments.md has the
whole story.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from sqlglot import exp

from ..datacontract import CONTRACT, column_type
from ..diagnostics import Diagnostic, ProjectError
from ..model import DataSourceConfig, Project
from .conditions import (
    WEEKDAYS,
    ZERO_WHEN_EMPTY,
    Abandoned,
    Aggregate,
    AggregateCompare,
    AllOf,
    AnyOf,
    Birthday,
    ConditionParser,
    Consent,
    CustomerField,
    FeatureCompare,
    Node,
    Not,
    PriceDropInCart,
    Problems,
    Sample,
    SegmentRef,
    period_spec,
    walk,
)
from .features import RFM, FavouriteCategory, FeatureDef, Lifecycle, MainStore, QuantileBands, Scoring, Value, parse_feature
from .periods import Window, birthday_keys, local_now, period_window, utc_offsets

DIALECTS = ("duckdb", "postgres", "spark")
CUSTOMER_FIELDS = tuple(CONTRACT["customers"])
CONTACT_FIELD = {"email": "email", "sms": "phone", "whatsapp": "phone", "telegram": "phone", "push": "push_token", "web_push": "web_push_endpoint"}
SECONDS_PER_DAY = 86400
UNIX_EPOCH = date(1970, 1, 1)
# Weekday numbers (Monday = 0) come from local day numbers: the same integer
# arithmetic on every dialect, unlike DAYOFWEEK whose numbering differs.
# 1970-01-01 was a Thursday; adding a multiple of 7 keeps the dividend positive
# for dates up to ~1,900 years back, since % of a negative number differs too.
EPOCH_WEEKDAY = 3 + 7 * 100_000
SAMPLE_HEX_DIGITS = 8


def segment_column(name: str) -> str:
    return f"segment.{name}"


def feature_column(name: str) -> str:
    return f"feature.{name}"


def customer_column(name: str) -> str:
    return f"customer.{name}"


@dataclass(frozen=True)
class CustomerColumns:
    """Per-customer values a caller reads beside the segments, from the same
    query and so from the same scan of each table (the planner's facts do):

    - ``fields``: customers columns by logical name; one the source lacks is null;
    - ``consents``: channel kinds, each as ``consent_<kind>``, 1 when the latest
      consent row is granted (the definition segments use), else 0;
    - ``aggregates``: (name, aggregate) pairs, each under its own name.
    """

    fields: tuple[str, ...] = ()
    consents: tuple[str, ...] = ()
    aggregates: tuple[tuple[str, Aggregate], ...] = ()


@dataclass(frozen=True)
class CompiledQuery:
    """One query returning one row per customer: ``customer_id``, a boolean
    ``segment.<name>`` column per segment, a ``feature.<name>`` column per
    feature value (``feature.rfm.r`` for parts) and a ``customer.<name>``
    column per :class:`CustomerColumns` value asked for."""

    sql: str
    dialect: str
    segments: tuple[str, ...]
    features: tuple[str, ...]  # feature value names: "rfm", "rfm.r", ...
    columns: tuple[str, ...] | None = None  # the CustomerColumns names asked for; None: none asked for


@dataclass(frozen=True)
class ParsedProject:
    segments: Mapping[str, Node]
    features: Mapping[str, FeatureDef]
    diagnostics: tuple[Diagnostic, ...]


def parse_project(project: Project) -> ParsedProject:
    """Every segment condition and feature as typed data, with every problem found."""
    diagnostics: list[Diagnostic] = []
    features = {name: parsed for name, feature in project.features.items() if (parsed := parse_feature(feature, diagnostics))}
    parts = {name: frozenset(feature.parts) for name, feature in features.items()}
    parts.update({name: frozenset({""}) for name in project.features if name not in features})  # reported already
    segments = {}
    for name, segment in project.segments.items():
        problems = Problems(segment.spec, f"segments.{name}", diagnostics)
        if "where" not in segment.spec:
            problems.add((), "a segment needs a `where` condition")
            continue
        node = ConditionParser(problems, project.segments, parts, CUSTOMER_FIELDS).parse(segment.spec["where"], ("where",))
        if node is not None:
            segments[name] = node
    diagnostics += _cycles(project, segments)
    return ParsedProject(segments, features, tuple(diagnostics))


def _cycles(project: Project, segments: Mapping[str, Node]) -> list[Diagnostic]:
    """The first cycle among segment references, if any: validation reports every
    cycle, located; here one keeps compile from recursing forever."""
    diagnostics: list[Diagnostic] = []
    for start in segments:
        if _closes_cycle(project, segments, [start], diagnostics):
            break
    return diagnostics


def _closes_cycle(project: Project, segments: Mapping[str, Node], path: list[str], diagnostics: list[Diagnostic]) -> bool:
    name = path[-1]
    for node in walk(segments[name]) if name in segments else ():
        if not isinstance(node, SegmentRef):
            continue
        if node.name == path[0]:
            Problems(project.segments[name].spec, f"segments.{name}", diagnostics).add(
                node.path, f"segments refer to each other in a cycle: {' -> '.join(path + [path[0]])}", "a segment cannot include itself")
            return True
        if node.name not in path and _closes_cycle(project, segments, path + [node.name], diagnostics):
            return True
    return False


def check_segments(project: Project) -> list[Diagnostic]:
    """Semantic problems in segments and features the JSON Schema cannot catch."""
    return list(parse_project(project).diagnostics)


def compile_segments(project: Project, names: Sequence[str] | None = None, *, now: datetime, dialect: str = "duckdb",
                     features: Sequence[str] = (), columns: CustomerColumns | None = None,
                     present: Collection[str] | None = None) -> CompiledQuery:
    """The query computing ``names`` (default: every segment), the segments they
    refer to, the features they use, the extra ``features`` asked for and the
    customer ``columns`` asked for (``present``: the customers table's columns,
    as for QueryBuilder.request)."""
    query = _build(project, names, now=now, dialect=dialect, features=features)
    if columns is not None:
        query.request(columns, present)
    asked = tuple(query.requested) if columns is not None else None
    return CompiledQuery(query.render(), dialect, query.segment_names, query.feature_names, asked)


def _build(project: Project, names: Sequence[str] | None, *, now: datetime, dialect: str, features: Sequence[str] = ()) -> "QueryBuilder":
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
    parsed = parse_project(project)
    if parsed.diagnostics:
        raise ProjectError(list(parsed.diagnostics))
    names = list(project.segments) if names is None else list(names)
    unknown = [name for name in list(names) + list(features) if name not in parsed.segments and name not in parsed.features]
    if unknown:
        raise KeyError(f"unknown segment or feature: {', '.join(unknown)}")
    builder = QueryBuilder(project, parsed, now, dialect)
    for name in names:
        builder.segment(name)
    for name in features:
        builder.feature(name)
    return builder


# --- SQL building blocks -------------------------------------------------------------


def literal(value: Any) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if value is None:
        return exp.Null()
    if isinstance(value, (int, float)):
        return exp.Literal.number(value)
    if isinstance(value, datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMPTZ" if value.tzinfo else "TIMESTAMP")
    if isinstance(value, date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    return exp.Literal.string(str(value))


def ident(name: str) -> exp.Column:
    """A column of an inner layer by its own (possibly dotted) name."""
    return exp.Column(this=exp.to_identifier(name, quoted=True))


def is_in(expression: exp.Expression, values: Iterable[Any]) -> exp.Expression:
    return exp.In(this=expression, expressions=[literal(value) for value in values])


def in_ids(expression: exp.Expression, ids: Iterable[int]) -> exp.Expression:
    """``expression IN (SELECT ids.id FROM (VALUES (1), (2), ...) AS ids(id))``;
    FALSE for no ids. Customer ids go in as a table, not as a list of
    constants: DuckDB checks a list with a join over every row, reading every
    column the query wants, but filters the scan by a table's ids first. For
    20 customers' orders among 18M, 0.4 s became 0.13 s; never slower up to
    5,000 ids. PostgreSQL and Spark plan either form as a semi-join."""
    rows = [exp.Tuple(expressions=[exp.Literal.number(int(i))]) for i in ids]
    if not rows:
        return exp.false()
    table = exp.Values(expressions=rows, alias=exp.TableAlias(this=exp.to_identifier("ids"), columns=[exp.to_identifier("id")]))
    # Not copied: the nodes are new, and a copy of 5,000 ids took ~40 ms.
    return expression.isin(query=exp.select(exp.column("id", table="ids")).from_(table, copy=False), copy=False)


def count_true(condition: exp.Expression) -> exp.Expression:
    return exp.Sum(this=exp.Case(ifs=[exp.If(this=condition, true=exp.Literal.number(1))], default=exp.Literal.number(0)))


def case(branches: Sequence[tuple[exp.Expression, exp.Expression]], default: exp.Expression | None = None) -> exp.Expression:
    return exp.Case(ifs=[exp.If(this=condition, true=value) for condition, value in branches], default=default)


def as_bool(expression: exp.Expression) -> exp.Expression:
    """Two-valued logic: a comparison with NULL is false, so NOT works as people expect."""
    return exp.Coalesce(this=expression, expressions=[exp.false()])


def compare(value: exp.Expression, op: str, operand: Any, cast: str | None = None) -> exp.Expression:
    def lit(item: Any) -> exp.Expression:
        return exp.cast(literal(item), cast) if cast and isinstance(item, str) else literal(item)

    if op == "is_null":
        null = exp.Is(this=value, expression=exp.Null())
        return null if operand else exp.Not(this=null)
    if op == "in":
        return as_bool(exp.In(this=value, expressions=[lit(item) for item in operand]))
    if op == "not_in":
        return as_bool(exp.Not(this=exp.In(this=value, expressions=[lit(item) for item in operand])))
    if op == "between":
        return as_bool(exp.Between(this=value, low=lit(operand[0]), high=lit(operand[1])))
    operator = {"eq": exp.EQ, "ne": exp.NEQ, "lt": exp.LT, "lte": exp.LTE, "gt": exp.GT, "gte": exp.GTE}[op]
    return as_bool(operator(this=value, expression=lit(operand)))


def quantile(value: exp.Expression, fraction: float, dialect: str) -> exp.Expression:
    """Continuous (interpolated) quantile. Spark's PERCENTILE is the exact,
    interpolated one; sqlglot would render PercentileCont for Spark in a form
    Spark does not accept, and PERCENTILE_APPROX would change the edges."""
    if dialect == "spark":
        return exp.Quantile(this=value, quantile=exp.Literal.number(fraction))
    return exp.PercentileCont(this=value, expression=exp.Literal.number(fraction))


@dataclass(frozen=True)
class SourceNames:
    """The data source's names for the logical tables and columns (the project's
    table mapping), as quoted sqlglot nodes."""

    mapping: DataSourceConfig

    def table(self, logical: str, alias: str) -> exp.Table:
        table = exp.to_table(self.mapping.table(logical).table, alias=alias)
        for part in ("this", "db", "catalog"):
            if isinstance(table.args.get(part), exp.Identifier):
                table.args[part].set("quoted", True)
        return table

    def col(self, alias: str, logical_table: str, logical: str) -> exp.Column:
        return exp.column(self.mapping.table(logical_table).column(logical), table=alias, quoted=True)

    def has_column(self, logical_table: str, logical: str, present: Collection[str] | None) -> bool:
        """Whether ``present`` (the table's columns as the source lists them; None
        or empty: unknown) holds the column; optional columns may be missing."""
        return not present or self.mapping.table(logical_table).column(logical).lower() in {name.lower() for name in present}


def epoch_micros(ts: exp.Expression, dialect: str) -> exp.Expression:
    """Microseconds since 1970 as a BIGINT, exact in every dialect (sqlglot's
    TimeToUnix is whole seconds on Spark; PostgreSQL has no UNIX_MICROS)."""
    if dialect == "postgres":
        seconds = exp.Extract(this=exp.var("EPOCH"), expression=ts)  # numeric, exact to the microsecond
        return exp.cast(exp.Mul(this=seconds, expression=literal(1_000_000)), "BIGINT")
    return exp.Anonymous(this="EPOCH_US" if dialect == "duckdb" else "UNIX_MICROS", expressions=[ts])


def latest_consents(names: SourceNames, kinds: Sequence[str], now: datetime, dialect: str,
                    customer_ids: Sequence[int] | None = None) -> exp.Select:
    """Per customer with consent rows, a column per channel kind in ``kinds``:
    1 when the latest row of that kind at or before ``now`` is granted, else 0.

    The latest row decides, and on a tie in time revoked wins: a row without
    a status counts as not granted (the safe reading for consent). One GROUP
    BY, no window, and one MAX per kind: of the row's time in microseconds,
    doubled, plus 1 for a row that does not grant, so the largest value is the
    latest row, a revoking one on a tie, and it grants when even. Two MAXes per
    kind (newest granted against newest other) took twice the time: six kinds
    of 2.6M rows, 0.85 against 0.42 CPU-s (DuckDB, 1M customers).
    ``customer_ids``: only these customers' rows (None: everyone's). The
    segments' consents and the planner's facts both read this."""
    k = "k"
    channel, status, updated_at = (names.col(k, "consents", name) for name in ("channel", "status", "updated_at"))
    grants = exp.EQ(this=status, expression=literal("granted"))  # NULL: the CASE gives 1
    doubled = exp.Mul(this=epoch_micros(updated_at, dialect), expression=literal(2))
    latest_key = exp.Paren(this=exp.Add(this=doubled, expression=case([(grants, literal(0))], literal(1))))
    latest_columns = []
    for kind in kinds:
        of_kind = exp.EQ(this=channel.copy(), expression=literal(kind))
        latest = exp.Filter(this=exp.Max(this=latest_key.copy()), expression=exp.Where(this=of_kind))
        latest_columns.append(exp.alias_(latest, kind, quoted=True))
    customer = names.col(k, "consents", "customer_id")
    rows = [is_in(channel.copy(), kinds), exp.LTE(this=updated_at.copy(), expression=literal(now))]
    if customer_ids is not None:
        rows.append(in_ids(customer.copy(), customer_ids))
    latest = (exp.select(customer.as_("customer_id"), *latest_columns)
              .from_(names.table("consents", k))
              .where(exp.and_(*rows))
              .group_by(customer.copy()))

    def flag(kind: str) -> exp.Expression:  # no row of the kind: NULL, not granted
        granted = exp.EQ(this=exp.Mod(this=ident(kind), expression=literal(2)), expression=literal(0))
        return exp.alias_(case([(granted, literal(1))], literal(0)), kind, quoted=True)

    return exp.select("customer_id", *(flag(kind) for kind in kinds)).from_(latest.subquery("latest"))


# --- the builder ----------------------------------------------------------------------


class QueryBuilder:
    """Collects what the requested segments need while turning their conditions
    into expressions over ``customer_features``, then assembles the CTEs."""

    def __init__(self, project: Project, parsed: ParsedProject, now: datetime, dialect: str):
        self.project, self.parsed, self.dialect = project, parsed, dialect
        self.now = local_now(now, project.timezone)
        self.today = self.now.date()
        self.names = SourceNames(project.data_source)
        self.aggregates: dict[Aggregate, str] = {}  # resolved aggregate -> customer_facts column
        self.customer_fields: list[str] = ["customer_id"]
        self.consents: list[str] = []
        self.contacts: list[str] = []  # customers columns checked for presence only
        self.price_drops: dict[tuple[timedelta, timedelta], str] = {}
        self.lookups: dict[str, tuple[str, exp.Select]] = {}  # cte -> (customer_facts column, first row per customer)
        self.shared_ctes: dict[str, exp.Select] = {}  # cte -> body, read by several others (not joined into the facts)
        self.features: dict[str, FeatureDef] = {}
        self.feature_columns: dict[str, exp.Expression] = {}  # "rfm.r" -> expression over customer_facts
        self.edge_ctes: dict[str, exp.Expression] = {}
        self.segments: dict[str, exp.Expression] = {}
        self.requested: dict[str, exp.Expression] = {}  # CustomerColumns name -> expression over customer_features

    @property
    def segment_names(self) -> tuple[str, ...]:
        return tuple(self.segments)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.feature_columns)

    # names of the data source

    def table(self, logical: str, alias: str) -> exp.Table:
        return self.names.table(logical, alias)

    def col(self, alias: str, logical_table: str, logical: str) -> exp.Column:
        return self.names.col(alias, logical_table, logical)

    # segments

    def segment(self, name: str) -> exp.Expression:
        if name not in self.segments:
            self.segments[name] = self.condition(self.parsed.segments[name])
        return self.segments[name]

    def condition(self, node: Node) -> exp.Expression:
        handler: Callable[[Any], exp.Expression] = getattr(self, f"_{type(node).__name__}")
        return handler(node)

    def _AllOf(self, node: AllOf) -> exp.Expression:
        return exp.and_(*(self.condition(item) for item in node.items))

    def _AnyOf(self, node: AnyOf) -> exp.Expression:
        return exp.or_(*(self.condition(item) for item in node.items))

    def _Not(self, node: Not) -> exp.Expression:
        return exp.Not(this=exp.Paren(this=self.condition(node.item)))

    def _SegmentRef(self, node: SegmentRef) -> exp.Expression:
        return self.segment(node.name).copy()

    def _CustomerField(self, node: CustomerField) -> exp.Expression:
        cast = {"date": "DATE", "timestamp": "TIMESTAMP"}.get(column_type("customers", node.field_name) or "")
        return compare(self.customer_field(node.field_name), node.comparison.op, node.comparison.value, cast)

    def _AggregateCompare(self, node: AggregateCompare) -> exp.Expression:
        return compare(self.aggregate(node.aggregate), node.comparison.op, node.comparison.value)

    def _FeatureCompare(self, node: FeatureCompare) -> exp.Expression:
        self.feature(node.feature)
        name = f"{node.feature}.{node.part}" if node.part else node.feature
        return compare(ident(feature_column(name)), node.comparison.op, node.comparison.value)

    def _Abandoned(self, node: Abandoned) -> exp.Expression:
        last_event = self.last_event_time(node)
        since = Window(self.now - node.within, None)
        latest_unless = []
        if "order" in node.unless:
            latest_unless.append(self.aggregate(Aggregate("orders", "last_ts", None, (("period", since),))))
        unless_events = tuple(kind for kind in node.unless if kind != "order")
        if unless_events:
            latest_unless.append(self.aggregate(Aggregate("events", "last_ts", None, (("period", since), ("type", unless_events)))))
        checks = [exp.Not(this=exp.Is(this=last_event, expression=exp.Null())), exp.LTE(this=last_event, expression=literal(self.now - node.after))]
        # Anything in `unless` at or after the last event cancels it.
        checks += [exp.Or(this=exp.Is(this=unless, expression=exp.Null()), expression=exp.LT(this=unless.copy(), expression=last_event.copy()))
                   for unless in latest_unless]
        return as_bool(exp.and_(*checks))

    def last_event_time(self, node: Abandoned) -> exp.Expression:
        """The latest of the abandoned events within the window: it must be older
        than ``after``, or the customer is still active and it is too early."""
        return self.aggregate(Aggregate("events", "last_ts", None, (("period", Window(self.now - node.within, None)), ("type", node.events))))

    def _PriceDropInCart(self, node: PriceDropInCart) -> exp.Expression:
        key = (node.within, node.cart_within)
        if key not in self.price_drops:
            self.price_drops[key] = f"price_drop_in_cart_{len(self.price_drops) + 1}"
        return exp.EQ(this=ident(self.price_drops[key]), expression=literal(1))

    def _Birthday(self, node: Birthday) -> exp.Expression:
        birthday = self.customer_field("birthday")
        month_day = exp.Add(this=exp.Mul(this=exp.Extract(this=exp.var("MONTH"), expression=birthday), expression=literal(100)),
                            expression=exp.Extract(this=exp.var("DAY"), expression=birthday.copy()))
        return as_bool(is_in(month_day, birthday_keys(self.today, node.within_days)))

    def _Consent(self, node: Consent) -> exp.Expression:
        granted = exp.EQ(this=self.consent(node.channel), expression=literal(1))
        if not node.require_contact:
            return granted
        return exp.and_(granted, self.contact_present(CONTACT_FIELD[node.channel]))

    def _Sample(self, node: Sample) -> exp.Expression:
        """md5(salt:id) as hex, its first digits compared as text: every dialect
        returns lower-case hex, so membership is the same on DuckDB, PostgreSQL and Spark."""
        if node.percent >= 100:
            return exp.true()
        threshold = format(round(node.percent / 100 * 16**SAMPLE_HEX_DIGITS), f"0{SAMPLE_HEX_DIGITS}x")
        return exp.LT(this=self.sample_hash(node.salt), expression=literal(threshold))

    def sample_hash(self, salt: str) -> exp.Expression:
        key = exp.DPipe(this=literal(f"{salt}:"), expression=exp.cast(ident("customer_id"), "VARCHAR"), safe=True)
        return exp.Substring(this=exp.MD5(this=key), start=literal(1), length=literal(SAMPLE_HEX_DIGITS))

    # facts

    def consent(self, kind: str) -> exp.Expression:
        """The customer_facts flag: 1 when the latest consent of ``kind`` is granted, else 0."""
        if kind not in self.consents:
            self.consents.append(kind)
        return ident(f"consent_{kind}")

    def contact_present(self, name: str) -> exp.Expression:
        """A customer_facts flag: the contact column ``name`` is neither null nor
        empty. A flag rather than the text keeps e-mails and tokens out of the
        materialized facts when only segments are asked for. (The planner's
        facts ask for the contacts themselves, through customer_facts like any
        field: at 1M customers that measured no dearer than joining customers
        again in the final select, which would also repeat rows of a
        duplicated customer_id.)"""
        if name not in self.contacts:
            self.contacts.append(name)
        return exp.EQ(this=ident(f"has_{name}"), expression=literal(1))

    def customer_field(self, name: str) -> exp.Expression:
        if name not in self.customer_fields:
            self.customer_fields.append(name)
        return ident(f"customer_{name}" if name != "customer_id" else name)

    def aggregate(self, aggregate: Aggregate) -> exp.Expression:
        """The customer_facts column holding ``aggregate`` (computed once however often used)."""
        resolved = self.resolve(aggregate)
        if resolved not in self.aggregates:
            self.aggregates[resolved] = f"{resolved.table}_{resolved.metric}_{len(self.aggregates) + 1}"
        return ident(self.aggregates[resolved])

    def resolve(self, aggregate: Aggregate) -> Aggregate:
        """Periods become windows so that equal windows written differently share a column."""
        period = aggregate.filter("period")
        if not isinstance(period, tuple):
            return aggregate
        window = period_window(period_spec(period), self.now)
        return replace(aggregate, filters=tuple((name, window if name == "period" else value) for name, value in aggregate.filters))

    def request(self, wanted: CustomerColumns, present: Collection[str] | None = None) -> None:
        """Return ``wanted`` beside the segments, as ``customer.<name>`` columns.
        ``present``: the customers table's columns as the source lists them
        (None: unknown, all assumed present); a field it lacks is null."""
        for name in wanted.fields:
            self.requested[name] = self.customer_field(name) if self.names.has_column("customers", name, present) else exp.Null()
        for kind in wanted.consents:
            self.requested[f"consent_{kind}"] = self.consent(kind)
        for name, aggregate in wanted.aggregates:
            self.requested[name] = self.aggregate(aggregate)

    # features

    def feature(self, name: str) -> None:
        if name in self.features:
            return
        definition = self.parsed.features[name]
        self.features[name] = definition
        columns = getattr(self, f"_feature_{type(definition).__name__}")(definition)
        for part, expression in columns.items():
            self.feature_columns[f"{name}.{part}" if part else name] = expression

    def _orders(self, metric: str, period: tuple | None, of: str | None = None) -> exp.Expression:
        filters = (("period", period),) if period else ()
        return self.aggregate(Aggregate("orders", metric, of, filters + (("status", ("completed",)),)))

    def _feature_RFM(self, feature: RFM) -> dict[str, exp.Expression]:
        recency = self._orders("days_since_last", feature.period)
        frequency = self._orders("count", feature.period)
        monetary = self._orders("sum", feature.period, "total")
        bought = exp.GT(this=frequency, expression=literal(0))
        edges_cte = f"{feature.name}_edges"
        edge_columns: dict[str, list[exp.Expression]] = {}
        wanted: list[QuantileEdges] = []
        for letter, value, scoring in (("r", recency, feature.recency), ("f", frequency, feature.frequency), ("m", monetary, feature.monetary)):
            if scoring.quantiles:
                names = [f"{feature.name}_{letter}_edge_{k}" for k in range(1, scoring.quantiles)]
                wanted.append(QuantileEdges(value, tuple(k / scoring.quantiles for k in range(1, scoring.quantiles)), tuple(names)))
                edge_columns[letter] = [ident(name) for name in names]
            else:
                edge_columns[letter] = [literal(threshold) for threshold in scoring.thresholds]
        if wanted:
            self.edge_ctes[edges_cte] = self.edge_query(wanted, bought.copy())
        scores = {
            "r": self._score(recency, edge_columns["r"], feature.recency, lower_is_better=True, population=bought),
            "f": self._score(frequency, edge_columns["f"], feature.frequency, lower_is_better=False, population=bought),
            "m": self._score(monetary, edge_columns["m"], feature.monetary, lower_is_better=False, population=bought),
        }
        groups = [(exp.and_(*(as_bool(is_in(scores[letter].copy(), allowed)) for letter, allowed in rule)), literal(label)) for label, rule in feature.groups]
        group = case([(exp.Not(this=bought.copy()), exp.Null())] + groups, literal(feature.fallback))
        return {"": group, **scores, "recency": recency, "frequency": frequency, "monetary": monetary}

    @staticmethod
    def _score(value: exp.Expression, edges: list[exp.Expression], scoring: Scoring, *, lower_is_better: bool, population: exp.Expression) -> exp.Expression:
        """Bins closed on the right: the bin of a value is how many edges lie below it."""
        bin_index = exp.Paren(this=sum_all([case([(exp.GT(this=value.copy(), expression=edge.copy()), literal(1))], literal(0)) for edge in edges]))
        score = exp.Sub(this=literal(scoring.scores), expression=bin_index) if lower_is_better else exp.Add(this=literal(1), expression=bin_index)
        return case([(population.copy(), score)], exp.Null())

    def _feature_Lifecycle(self, feature: Lifecycle) -> dict[str, exp.Expression]:
        since_last = self._orders("days_since_last", None)
        since_first = self._orders("days_since_first", None)
        orders = self._orders("count", None)
        span = exp.Sub(this=since_first.copy(), expression=since_last.copy())
        measured = exp.Div(this=exp.cast(span, "DOUBLE"), expression=exp.Paren(this=exp.Sub(this=orders.copy(), expression=literal(1))))
        # Orders all on one day measure no cycle: they get the default like a one-time buyer.
        enough = exp.and_(exp.GTE(this=orders, expression=literal(feature.min_orders)), exp.GT(this=span.copy(), expression=literal(0)))
        cycle = case([(enough, measured)], exp.cast(literal(feature.default_cycle_days), "DOUBLE"))

        def beyond(multiple: float) -> exp.Expression:
            return exp.GT(this=since_last.copy(), expression=exp.Mul(this=literal(multiple), expression=exp.Paren(this=cycle.copy())))

        stage = case([
            (exp.Is(this=since_last.copy(), expression=exp.Null()), exp.Null()),
            (exp.LTE(this=since_first, expression=literal(feature.new_days)), literal("new")),
            (beyond(feature.deep_churn), literal("deep_churn")),
            (beyond(feature.churn), literal("churn")),
            (beyond(feature.pre_churn), literal("pre_churn")),
        ], literal("active"))
        return {"": stage, "cycle_days": case([(exp.Not(this=exp.Is(this=since_last.copy(), expression=exp.Null())), cycle.copy())], exp.Null())}

    def _feature_QuantileBands(self, feature: QuantileBands) -> dict[str, exp.Expression]:
        value = self.aggregate(feature.value)
        population = exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))
        if feature.positive_only:
            population = exp.and_(population, exp.GT(this=value.copy(), expression=literal(0)))
        kept = population
        if feature.iqr is not None:
            fences = f"{feature.name}_fences"
            q1, q3 = ident(f"{feature.name}_q1"), ident(f"{feature.name}_q3")
            self.edge_ctes[fences] = self.edge_query([QuantileEdges(value, (0.25, 0.75), (f"{feature.name}_q1", f"{feature.name}_q3"))], population.copy())
            spread = exp.Mul(this=literal(feature.iqr), expression=exp.Paren(this=exp.Sub(this=q3.copy(), expression=q1.copy())))
            kept = exp.and_(population.copy(), exp.Between(this=value.copy(), low=exp.Sub(this=q1.copy(), expression=spread), high=exp.Add(this=q3.copy(), expression=spread.copy())))
        names = [f"{feature.name}_edge_{k}" for k in range(1, len(feature.quantiles) + 1)]
        fences_table = f"{feature.name}_fences" if feature.iqr is not None else None
        self.edge_ctes[f"{feature.name}_edges"] = self.edge_query([QuantileEdges(value, feature.quantiles, tuple(names))], kept.copy(), fences_table)
        bands = [(exp.LTE(this=value.copy(), expression=ident(name)), literal(label)) for name, label in zip(names, feature.labels)]
        band = case([(exp.Not(this=exp.Paren(this=kept.copy())), exp.Null())] + bands, literal(feature.labels[-1]))
        return {"": band, "value": value}

    def edge_query(self, wanted: list["QuantileEdges"], population: exp.Expression, cross_join: str | None = None) -> exp.Select:
        """One row: the quantile edges of each wanted value over the customer_facts
        rows in ``population`` (``cross_join``: a one-row table the condition reads)."""
        source = exp.select().from_("customer_facts")
        if cross_join:
            source = source.join(exp.to_table(cross_join), join_type="cross")
        if self.dialect != "duckdb":
            return source.select(*(exp.alias_(quantile(edges.value.copy(), fraction, self.dialect), name, quoted=True)
                                   for edges in wanted for fraction, name in zip(edges.fractions, edges.names))).where(population)
        # DuckDB keeps a copy of the values per QUANTILE_CONT call; one call with
        # a list of fractions per value keeps one (~100 MB less at 1M customers).
        lists = [f"edges_{index}" for index in range(len(wanted))]
        inner = source.select(*(exp.alias_(exp.PercentileCont(this=edges.value.copy(), expression=exp.Array(expressions=[literal(f) for f in edges.fractions])), column, quoted=True)
                                for edges, column in zip(wanted, lists))).where(population)
        picks = [exp.alias_(exp.Bracket(this=ident(column), expressions=[literal(position)]), name, quoted=True)  # sqlglot indexes from 0
                 for edges, column in zip(wanted, lists) for position, name in enumerate(edges.names)]
        return exp.select(*picks).from_(inner.subquery("quantiles"))

    def _feature_Value(self, feature: Value) -> dict[str, exp.Expression]:
        return {"": self.aggregate(feature.value)}

    def _feature_FavouriteCategory(self, feature: FavouriteCategory) -> dict[str, exp.Expression]:
        """The category of most lines bought, then most money, then first by name:
        the order is total, so a tie never depends on row order. (Lines, not
        distinct orders: COUNT(DISTINCT) here costs more than the rest of the query.)

        Categories are grouped by a number (their rank by name) rather than by
        name: the (customer, category) aggregate is the largest of the query
        (~8M groups per 1M customers), and integer keys take about a fifth
        off the whole query's peak memory (1,461 to 1,162 MiB at 1M customers)."""
        o, l, k = "o", "l", "k"
        amount = exp.Mul(this=self.col(l, "order_lines", "qty"), expression=self.col(l, "order_lines", "price"))
        code = exp.column("code", table=k)
        per_category = (
            exp.select(self.col(o, "orders", "customer_id").as_("customer_id"), code.as_("value"))
            .from_(self.table("order_lines", l))
            .join(self.table("orders", o), on=exp.EQ(this=self.col(l, "order_lines", "order_id"), expression=self.col(o, "orders", "order_id")))
            .join(exp.to_table(self.category_codes(), alias=k),
                  on=exp.EQ(this=exp.column("value", table=k), expression=self.col(l, "order_lines", "category")))
            .where(exp.and_(self.order_window(self.period(feature.period)), is_in(self.col(o, "orders", "status"), ["completed"])))
            .group_by(self.col(o, "orders", "customer_id"), code.copy())
        )
        # Smallest key first: most lines, most money (0 when prices are missing), the name's rank.
        key = [exp.Neg(this=exp.Count(this=exp.Star())), exp.Neg(this=exp.Coalesce(this=exp.Sum(this=amount), expressions=[literal(0)])), code.copy()]
        return {"": self.pick_per_customer(feature.name, per_category, key, largest=False, decode=self.category_codes())}

    def category_codes(self) -> str:
        """A CTE numbering the categories of order lines by name (value, code)."""
        name = "category_codes"
        if name not in self.shared_ctes:
            category = self.col("l", "order_lines", "category")
            names = (exp.select(category.as_("value")).distinct().from_(self.table("order_lines", "l"))
                     .where(exp.Not(this=exp.Is(this=category.copy(), expression=exp.Null()))))
            rank = exp.Window(this=exp.RowNumber(), order=exp.Order(expressions=[exp.Ordered(this=exp.column("value"))]))
            self.shared_ctes[name] = exp.select("value", rank.as_("code")).from_(names.subquery("category_names"))
        return name

    def _feature_MainStore(self, feature: MainStore) -> dict[str, exp.Expression]:
        """The store of most offline orders, then of the latest one, then the lowest id; the home store otherwise."""
        o = "o"
        store = self.col(o, "orders", "store_id")
        per_store = (
            exp.select(self.col(o, "orders", "customer_id").as_("customer_id"), store.as_("value"))
            .from_(self.table("orders", o))
            .where(exp.and_(self.order_window(self.period(feature.period)), is_in(self.col(o, "orders", "status"), ["completed"]),
                            is_in(self.col(o, "orders", "channel"), ["offline"]), exp.Not(this=exp.Is(this=store.copy(), expression=exp.Null()))))
            .group_by(self.col(o, "orders", "customer_id"), store.copy())
        )
        key = [exp.Count(this=exp.Star()), exp.Max(this=self.col(o, "orders", "ts")), exp.Neg(this=store.copy())]
        main = self.pick_per_customer(feature.name, per_store, key, largest=True)
        return {"": exp.Coalesce(this=main, expressions=[self.customer_field("home_store_id")])}

    def pick_per_customer(self, name: str, grouped: exp.Select, key: list[exp.Expression], *, largest: bool,
                          decode: str | None = None) -> exp.Expression:
        """Per customer, the ``value`` of the row of ``grouped`` (customer_id,
        value, one row per candidate) whose ``key`` (compared left to right;
        never null, unique per customer) is the largest or smallest; joined into the facts.

        DuckDB and Spark have ARG_MAX/MAX_BY over a struct: one more hash
        aggregate, several times cheaper than ranking every candidate with a
        window. PostgreSQL has neither, so it ranks with ROW_NUMBER; the key
        is total, so both pick the same row. ``decode``: a CTE (value, code)
        the picked ``value`` is a code of, to be replaced by its value.
        """
        keys = [f"key_{index}" for index in range(1, len(key) + 1)]
        candidates = grouped.select(*(exp.alias_(part, column) for part, column in zip(key, keys))).subquery("candidates")
        if self.dialect == "postgres":
            order = exp.Order(expressions=[exp.Ordered(this=exp.column(column), desc=largest) for column in keys])
            rank = exp.Window(this=exp.RowNumber(), partition_by=[exp.column("customer_id")], order=order)
            ranked = exp.select("customer_id", "value", rank.as_("row_rank")).from_(candidates).subquery("ranked")
            first = exp.select("customer_id", "value").from_(ranked).where(exp.EQ(this=exp.column("row_rank"), expression=literal(1)))
        else:
            pick = (exp.ArgMax if largest else exp.ArgMin)(this=exp.column("value"), expression=exp.Struct(expressions=[exp.column(column) for column in keys]))
            first = exp.select("customer_id", pick.as_("value")).from_(candidates).group_by("customer_id")
        if decode is not None:
            first = (exp.select(exp.column("customer_id", table="picked"), exp.column("value", table="decoded"))
                     .from_(first.subquery("picked"))
                     .join(exp.to_table(decode, alias="decoded"),
                           on=exp.EQ(this=exp.column("code", table="decoded"), expression=exp.column("value", table="picked"))))
        column = f"{name}_value"
        self.lookups[f"{name}_lookup"] = (column, first)
        return ident(column)

    # time windows

    def period(self, period: tuple | None) -> Window | None:
        return period_window(period_spec(period), self.now) if period else None

    def order_window(self, window: Window | None, ts: exp.Expression | None = None) -> exp.Expression:
        """Rows at or before ``now`` (so the clock can move back) inside ``window``."""
        ts = ts if ts is not None else self.col("o", "orders", "ts")
        checks = [exp.LTE(this=ts, expression=literal(self.now))]
        if window and window.start:
            checks.append(exp.GTE(this=ts.copy(), expression=literal(window.start)))
        if window and window.end:
            checks.append(exp.LT(this=ts.copy(), expression=literal(window.end)))
        return exp.and_(*checks)

    # assembling

    def render(self) -> str:
        return self.select().sql(dialect=self.dialect, pretty=True)

    def select(self) -> exp.Select:
        """The whole query: one row per customer with segments and features."""
        columns = [ident("customer_id")]
        columns += [exp.alias_(expression.copy(), segment_column(name), quoted=True) for name, expression in self.segments.items()]
        columns += [ident(feature_column(name)) for name in self.feature_columns]
        columns += [exp.alias_(expression.copy(), customer_column(name), quoted=True) for name, expression in self.requested.items()]
        return self.with_layers(exp.select(*columns).from_("customer_features"))

    def with_layers(self, query: exp.Select) -> exp.Select:
        """``query`` (over customer_features) with every layer it reads attached as CTEs."""
        ctes = AggregateSQL(self).ctes()
        ctes += list(self.shared_ctes.items())
        ctes += [(name, select) for name, (_, select) in self.lookups.items()]
        ctes += self.consent_ctes() + self.price_drop_ctes()
        ctes.append(("customer_facts", self.facts()))
        ctes += list(self.edge_ctes.items())
        ctes.append(("customer_features", self.features_layer()))
        reused = ({"customer_facts"} if self.edge_ctes else set()) | set(self.shared_ctes)
        for name, body in ctes:
            # DuckDB would compute a CTE again per reference; Spark has no MATERIALIZED.
            query = query.with_(name, as_=body, materialized=True if name in reused and self.dialect != "spark" else None,
                                copy=False)  # copying the growing query per CTE is quadratic
        return query

    def facts(self) -> exp.Select:
        c = "c"
        columns = [self.col(c, "customers", field).as_(f"customer_{field}" if field != "customer_id" else field, quoted=True) for field in self.customer_fields]
        for field in self.contacts:
            contact = self.col(c, "customers", field)
            present = exp.and_(exp.Not(this=exp.Is(this=contact, expression=exp.Null())), exp.NEQ(this=contact.copy(), expression=literal("")))
            columns.append(exp.alias_(case([(present, literal(1))], literal(0)), f"has_{field}", quoted=True))
        by_table = AggregateSQL(self).aggregate_columns()
        for aggregate, column in self.aggregates.items():
            raw = exp.column(column, table=f"{aggregate.table}_agg", quoted=True)
            columns.append(exp.alias_(self.metric_value(aggregate, raw), column, quoted=True))
        for cte, (column, _) in self.lookups.items():
            columns.append(exp.alias_(exp.column("value", table=cte), column, quoted=True))
        for channel in self.consents:
            columns.append(exp.alias_(exp.Coalesce(this=exp.column(channel, table="latest_consents", quoted=True), expressions=[literal(0)]), f"consent_{channel}", quoted=True))
        for name in self.price_drops.values():
            flag = case([(exp.Not(this=exp.Is(this=exp.column("customer_id", table=name), expression=exp.Null())), literal(1))], literal(0))
            columns.append(exp.alias_(flag, name, quoted=True))
        query = exp.select(*columns).from_(self.table("customers", c))
        customer = self.col(c, "customers", "customer_id")
        joined = [f"{table}_agg" for table in by_table] + list(self.lookups) + (["latest_consents"] if self.consents else []) + list(self.price_drops.values())
        for cte in joined:
            query = query.join(exp.to_table(cte), on=exp.EQ(this=exp.column("customer_id", table=cte), expression=customer.copy()), join_type="left", copy=False)
        return query

    def metric_value(self, aggregate: Aggregate, raw: exp.Expression) -> exp.Expression:
        if aggregate.metric in ZERO_WHEN_EMPTY:
            return exp.Coalesce(this=raw, expressions=[literal(0)])
        if aggregate.metric in ("days_since_last", "days_since_first"):
            # Calendar days in the project's zone: 23:30 yesterday is 1 day ago at 00:10.
            return exp.Sub(this=literal(day_number(self.today)), expression=self.local_day(raw))
        return raw

    # calendar days in the project's time zone

    def local_day(self, ts: exp.Expression) -> exp.Expression:
        """The date of instant ``ts`` in the project's time zone, as days since 1970-01-01.

        Unix seconds plus the zone's UTC offset at that instant, divided by a
        day: integer arithmetic that every dialect computes alike whatever its
        session time zone, and far cheaper in DuckDB than casting to DATE
        (which goes through ICU). The offsets are literals from Python's tz
        database, so engines with different tz data still agree.
        """
        seconds = exp.TimeToUnix(this=exp.cast(ts, "TIMESTAMPTZ"))
        local_seconds = exp.Paren(this=exp.Add(this=seconds, expression=self.utc_offset(seconds.copy())))
        return exp.cast(exp.Floor(this=exp.Div(this=local_seconds, expression=literal(SECONDS_PER_DAY))), "BIGINT")

    def utc_offset(self, seconds: exp.Expression) -> exp.Expression:
        """The project zone's UTC offset (seconds) at Unix time ``seconds``:
        one literal for a zone without changes, else a CASE, newest change first
        because most rows are recent."""
        changes = utc_offsets(self.project.timezone, self.now)
        if len(changes) == 1:
            return literal(changes[0].offset)
        newest_first = [(exp.GTE(this=seconds.copy(), expression=literal(change.since)), literal(change.offset)) for change in reversed(changes[1:])]
        return exp.Paren(this=case(newest_first, literal(changes[0].offset)))

    def weekday(self, ts: exp.Expression) -> exp.Expression:
        """0 for Monday .. 6 for Sunday, in the project's time zone."""
        shifted = exp.Paren(this=exp.Add(this=self.local_day(ts), expression=literal(EPOCH_WEEKDAY)))
        return exp.Paren(this=exp.Mod(this=shifted, expression=literal(7)))

    def consent_ctes(self) -> list[tuple[str, exp.Expression]]:
        """Per customer, whether the latest consent of each kind asked for is granted (:func:`latest_consents`)."""
        return [("latest_consents", latest_consents(self.names, self.consents, self.now, self.dialect))] if self.consents else []

    def price_drop_ctes(self) -> list[tuple[str, exp.Expression]]:
        return [(name, self.price_drop_cte(within, cart_within)) for (within, cart_within), name in self.price_drops.items()]

    def price_drop_cte(self, within: timedelta, cart_within: timedelta) -> exp.Select:
        """Customers with a price drop on a product they put in the cart and have not ordered since."""
        e, o, l = "e", "o", "l"

        def events_of(kind: str, since: timedelta) -> exp.Expression:
            return exp.and_(exp.EQ(this=self.col(e, "events", "type"), expression=literal(kind)),
                            self.order_window(Window(self.now - since, None), self.col(e, "events", "ts")))

        carts = (exp.select(self.col(e, "events", "customer_id").as_("customer_id"), self.col(e, "events", "product_id").as_("product_id"),
                            exp.Max(this=self.col(e, "events", "ts")).as_("carted_at"))
                 .from_(self.table("events", e)).where(events_of("cart_updated", cart_within))
                 .group_by(self.col(e, "events", "customer_id"), self.col(e, "events", "product_id")))
        drops = (exp.select(self.col(e, "events", "customer_id").as_("customer_id"), self.col(e, "events", "product_id").as_("product_id"))
                 .distinct().from_(self.table("events", e)).where(events_of("price_dropped", within)))
        # Only customers with a price drop can match: restricting the orders to them
        # first leaves a tiny join to order_lines instead of one over all recent orders.
        dropped_customers = exp.select(self.col(e, "events", "customer_id")).from_(self.table("events", e)).where(events_of("price_dropped", within))
        ordered = (exp.select(self.col(o, "orders", "customer_id").as_("customer_id"), self.col(l, "order_lines", "product_id").as_("product_id"),
                              exp.Max(this=self.col(o, "orders", "ts")).as_("ordered_at"))
                   .from_(self.table("order_lines", l))
                   .join(self.table("orders", o), on=exp.EQ(this=self.col(l, "order_lines", "order_id"), expression=self.col(o, "orders", "order_id")))
                   .where(exp.and_(self.order_window(Window(self.now - cart_within, None)),
                                   self.col(o, "orders", "customer_id").isin(query=dropped_customers)))
                   .group_by(self.col(o, "orders", "customer_id"), self.col(l, "order_lines", "product_id")))

        def same_item(left: str, right: str) -> exp.Expression:
            return exp.and_(*(exp.EQ(this=exp.column(key, table=left), expression=exp.column(key, table=right)) for key in ("customer_id", "product_id")))

        ordered_at = exp.column("ordered_at", table="ordered")
        return (exp.select(exp.column("customer_id", table="cart")).distinct()
                .from_(carts.subquery("cart"))
                .join(drops.subquery("dropped"), on=same_item("cart", "dropped"))
                .join(ordered.subquery("ordered"), on=same_item("cart", "ordered"), join_type="left")
                .where(exp.or_(exp.Is(this=ordered_at, expression=exp.Null()), exp.LT(this=ordered_at.copy(), expression=exp.column("carted_at", table="cart")))))

    def features_layer(self) -> exp.Select:
        columns = [exp.Star()] + [exp.alias_(expression.copy(), feature_column(name), quoted=True) for name, expression in self.feature_columns.items()]
        query = exp.select(*columns).from_("customer_facts")
        for name in self.edge_ctes:
            query = query.join(exp.to_table(name), join_type="cross", copy=False)
        return query


def day_number(day: date) -> int:
    """Days since 1970-01-01: what QueryBuilder.local_day computes in SQL."""
    return (day - UNIX_EPOCH).days


@dataclass(frozen=True)
class QuantileEdges:
    """Continuous quantiles of one value at ``fractions``, named ``names``."""

    value: exp.Expression
    fractions: tuple[float, ...]
    names: tuple[str, ...]


def sum_all(terms: list[exp.Expression]) -> exp.Expression:
    total = terms[0]
    for term in terms[1:]:
        total = exp.Add(this=total, expression=term)
    return total


class AggregateSQL:
    """The per-table aggregate CTEs: one scan of each source table computes
    every aggregate on it, each with its own FILTER."""

    def __init__(self, builder: QueryBuilder):
        self.builder = builder

    def aggregate_columns(self) -> dict[str, list[tuple[Aggregate, str]]]:
        by_table: dict[str, list[tuple[Aggregate, str]]] = {}
        for aggregate, column in self.builder.aggregates.items():
            by_table.setdefault(aggregate.table, []).append((aggregate, column))
        return by_table

    def ctes(self) -> list[tuple[str, exp.Expression]]:
        ctes = []
        by_table = self.aggregate_columns()
        line_flags = self.order_line_flags(by_table.get("orders", []))
        if line_flags:
            ctes.append(("order_line_flags", self.order_line_flags_cte(line_flags)))
        for table, aggregates in by_table.items():
            ctes.append((f"{table}_agg", self.table_cte(table, aggregates, line_flags)))
        return ctes

    # Orders filtered by category or product ask "has the order a line with it":
    # one pass over order_lines computes a flag per distinct such filter.
    def order_line_flags(self, aggregates: list[tuple[Aggregate, str]]) -> dict[tuple[str, tuple], str]:
        flags: dict[tuple[str, tuple], str] = {}
        for aggregate, _ in aggregates:
            for name in ("category", "product"):
                value = aggregate.filter(name)
                if value is not None and (name, value) not in flags:
                    flags[(name, value)] = f"has_{name}_{len(flags) + 1}"
        return flags

    def line_column(self, name: str) -> exp.Column:
        return self.builder.col("l", "order_lines", "category" if name == "category" else "product_id")

    def order_line_flags_cte(self, flags: dict[tuple[str, tuple], str]) -> exp.Select:
        b = self.builder
        columns = [b.col("l", "order_lines", "order_id").as_("order_id")]
        columns += [exp.alias_(exp.Max(this=case([(is_in(self.line_column(name), values), literal(1))], literal(0))), flag) for (name, values), flag in flags.items()]
        relevant = exp.or_(*(is_in(self.line_column(name), values) for (name, values) in flags))
        return exp.select(*columns).from_(b.table("order_lines", "l")).where(relevant).group_by(b.col("l", "order_lines", "order_id"))

    def table_cte(self, table: str, aggregates: list[tuple[Aggregate, str]], line_flags: dict[tuple[str, tuple], str]) -> exp.Select:
        b = self.builder
        base = "e" if table == "events" else "o"
        base_table = "events" if table == "events" else "orders"
        customer = b.col(base, base_table, "customer_id")
        ts = b.col(base, base_table, "ts")
        columns = [customer.as_("customer_id")]
        for aggregate, column in aggregates:
            value = self.metric_sql(aggregate, ts)
            predicate = self.predicate(aggregate, ts, line_flags)
            if predicate is not None:
                value = exp.Filter(this=value, expression=exp.Where(this=predicate))
            columns.append(exp.alias_(value, column, quoted=True))
        query = exp.select(*columns)
        if table == "order_lines":
            query = query.from_(b.table("order_lines", "l")).join(
                b.table("orders", "o"), on=exp.EQ(this=b.col("l", "order_lines", "order_id"), expression=b.col("o", "orders", "order_id")))
        else:
            query = query.from_(b.table(base_table, base))
        if table != "events" and any(aggregate.filter("mall") or aggregate.filter("city") for aggregate, _ in aggregates):
            query = query.join(b.table("stores", "s"), on=exp.EQ(this=b.col("o", "orders", "store_id"), expression=b.col("s", "stores", "store_id")), join_type="left")
        if table == "orders" and line_flags:
            query = query.join(exp.to_table("order_line_flags", alias="f"), on=exp.EQ(this=exp.column("order_id", table="f"), expression=b.col("o", "orders", "order_id")), join_type="left")
        return query.where(b.order_window(self.common_window(aggregates), ts.copy())).group_by(customer.copy())

    @staticmethod
    def common_window(aggregates: list[tuple[Aggregate, str]]) -> Window | None:
        """The earliest start all aggregates share: rows before it are never read."""
        starts = [aggregate.filter("period").start if aggregate.filter("period") else None for aggregate, _ in aggregates]
        return Window(min(starts), None) if starts and None not in starts else None

    def metric_sql(self, aggregate: Aggregate, ts: exp.Expression) -> exp.Expression:
        metric = aggregate.metric
        if metric == "count":
            return exp.Count(this=exp.Star())
        if metric in ("days_since_last", "last_ts"):
            return exp.Max(this=ts.copy())
        if metric in ("days_since_first", "first_ts"):
            return exp.Min(this=ts.copy())
        if metric == "distinct_days":
            return exp.Count(this=exp.Distinct(expressions=[self.builder.local_day(ts.copy())]))
        value = self.of_column(aggregate)
        if metric == "distinct":
            return exp.Count(this=exp.Distinct(expressions=[value]))
        return {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[metric](this=value)

    def of_column(self, aggregate: Aggregate) -> exp.Expression:
        b = self.builder
        if aggregate.table == "order_lines":
            if aggregate.of == "amount":
                return exp.Mul(this=b.col("l", "order_lines", "qty"), expression=b.col("l", "order_lines", "price"))
            return b.col("l", "order_lines", aggregate.of)
        if aggregate.table == "events":
            return b.col("e", "events", aggregate.of)
        return b.col("o", "orders", aggregate.of)

    def predicate(self, aggregate: Aggregate, ts: exp.Expression, line_flags: dict[tuple[str, tuple], str]) -> exp.Expression | None:
        b = self.builder
        checks: list[exp.Expression] = []
        weekdays: list[exp.Expression] = []  # checked last, see below
        for name, value in aggregate.filters:
            if name == "period":
                if value.start:
                    checks.append(exp.GTE(this=ts.copy(), expression=literal(value.start)))
                if value.end:
                    checks.append(exp.LT(this=ts.copy(), expression=literal(value.end)))
            elif name == "weekday":
                weekdays.append(is_in(b.weekday(ts.copy()), [WEEKDAYS.index(day) for day in value]))
            elif name in ("category", "product") and aggregate.table == "orders":
                checks.append(exp.EQ(this=exp.column(line_flags[(name, value)], table="f"), expression=literal(1)))
            else:
                checks.append(is_in(self.filter_column(aggregate.table, name), value))
        if weekdays and checks:
            # Engines evaluate every conjunct of a FILTER for every row; behind a CASE
            # the date arithmetic runs only for the rows the cheap checks let through.
            return case([(exp.and_(*checks), exp.and_(*weekdays))], exp.false())
        return exp.and_(*(checks + weekdays)) if checks or weekdays else None

    def filter_column(self, table: str, name: str) -> exp.Expression:
        b = self.builder
        if table == "events":
            return b.col("e", "events", {"type": "type", "category": "category", "product": "product_id"}[name])
        if name in ("mall", "city"):
            return b.col("s", "stores", name)
        if table == "order_lines" and name in ("category", "product"):
            return self.line_column(name)
        return b.col("o", "orders", {"channel": "channel", "store": "store_id", "status": "status"}[name])
