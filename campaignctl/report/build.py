"""build_report: state + data source -> Report."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import Project
from . import analytics as crm
from .collect import (
    ReportInputError,
    Scope,
    enrollments_from_file,
    joined,
    messages_from_state,
    order_span,
    orders_between,
    state_tables,
)
from .economics import economics, holdout_view
from .experiments import experiments, funnel
from .model import Report

if TYPE_CHECKING:
    from ..contracts import DataSource

DEFAULT_WINDOW = timedelta(days=7)
DEFAULT_PRE_PERIOD = timedelta(days=28)
DEFAULT_PERIOD = timedelta(days=30)  # analytics and the holdout view without --from


@dataclass(frozen=True)
class ReportOptions:
    campaign: str | None = None
    start: datetime | None = None  # enrollments entered from here (None: all)
    end: datetime | None = None  # ... until here (None: now)
    window: timedelta = DEFAULT_WINDOW
    pre_period: timedelta = DEFAULT_PRE_PERIOD
    assignments: Path | None = None  # an experiment another system assigned
    experiment: str | None = None  # its name (default: the file's stem)
    control_share: float | None = None  # its configured control share, for the SRM check
    bootstrap: bool = False
    analytics: bool = True


def build_report(project: Project, store: Any, source: DataSource, now: datetime, options: ReportOptions = ReportOptions()) -> Report:
    """The report as of ``now``. ``store`` may be None with ``options.assignments``."""
    timings: dict[str, float] = {}
    clock = partial(_timed, timings)
    end = min(options.end or now, now)
    period_start = options.start or end - DEFAULT_PERIOD
    scope = Scope(options.start, end, now, options.window, options.pre_period)
    notes: list[str] = []

    with clock("state"):
        if options.assignments is not None:
            name = options.experiment or options.assignments.stem
            enrollments = enrollments_from_file(options.assignments, name, scope)
            messages = messages_from_state(store, [name]) if store is not None else messages_from_state(_NoState(), [])
            expected = {name: options.control_share}
        else:
            if options.campaign and options.campaign not in project.campaigns and not store.enrollments(options.campaign):
                raise ReportInputError(f"no campaign {options.campaign!r} in the project or the state; "
                                       f"known: {', '.join(sorted(project.campaigns)) or 'none'}")
            enrollments, messages = state_tables(store, scope, options.campaign)
            campaigns = sorted(set(enrollments.column("campaign").unique().to_pylist()))
            expected = {c: _comparison_share(project, c) for c in campaigns}
    with clock("orders"):
        span = order_span(enrollments, scope)
        orders = orders_between(project, source, *span) if span else _no_orders()
    with clock("join"):
        db = joined(enrollments, messages, orders, scope)
    with clock("experiments"):
        rows = funnel(db)
        tests = experiments(db, expected, _arm_weights(project), use_bootstrap=options.bootstrap)
        costs = economics(project, db, tests, store, source, min(end + options.window, now))
        attributed = float(db.execute("SELECT COALESCE(SUM(revenue), 0) FROM attributed").fetchone()[0])
    holdout = analytics = None
    if options.analytics:
        with clock("customer values"):
            values = crm.customer_values(project, source, period_start, end)
            holdout = holdout_view(project, values.customer_ids, values.period_revenue, attributed)
        with clock("analytics"):
            analytics = crm.analytics(project, source, values, period_start, end)
    if enrollments.num_rows == 0:
        notes.append("no enrollments in this period: run `campaignctl apply` first, or widen --from/--to")
    if any(e.offer_cost is None for e in costs):
        notes.append("DRR counts message cost only for campaigns without an offer")
    return Report(
        project=project.name, currency=project.currency, timezone=project.timezone, now=now, start=options.start, end=end,
        window_days=options.window.total_seconds() / 86400, pre_period_days=options.pre_period.total_seconds() / 86400, funnel=rows, experiments=tests, economics=costs,
        holdout=holdout, analytics=analytics, notes=tuple(notes), timings=timings,
    )


def report(project: Project, now: datetime, options: ReportOptions = ReportOptions(), *,
           environ: Mapping[str, str] | None = None) -> Report:
    """Open the project's state store and data source, build the report, close them."""
    from ..connect import open_data_source, open_state_store

    source = open_data_source(project, environ)
    store = None
    try:
        state_file = _state_is_optional(project, options)
        store = None if state_file else open_state_store(project, environ)
        return build_report(project, store, source, now, options)
    finally:
        if store is not None:
            store.close()
        source.close()


def _state_is_optional(project: Project, options: ReportOptions) -> bool:
    """An experiment from an assignment file needs no state when the project has none yet."""
    if options.assignments is None or project.state_store.plugin != "sqlite":
        return False
    path = project.root / str(project.state_store.options.get("path", ".campaignctl/state.db"))
    return not path.exists()


def _comparison_share(project: Project, campaign: str) -> float | None:
    """The configured share of the comparison group among treated + comparison:
    the campaign's control, or the global holdout for a campaign without one."""
    definition = project.campaigns.get(campaign)
    if definition is None:
        return None
    if definition.control > 0:
        return definition.control
    holdout = project.policies.global_holdout
    return holdout if holdout > 0 else None


def _arm_weights(project: Project) -> dict[str, dict[str, float]]:
    return {name: {arm.name: arm.weight for arm in c.arms} for name, c in project.campaigns.items() if c.arms}


def _no_orders():
    import pyarrow as pa

    from .collect import TS

    return pa.table({"customer_id": pa.array([], pa.int64()), "ts": pa.array([], TS), "total": pa.array([], pa.float64())})


class _NoState:
    def message_keys(self, status=None):
        return []


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started
