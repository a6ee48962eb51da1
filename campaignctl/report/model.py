"""A report as data: every rendering (text, Markdown, JSON, HTML) reads this."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from .stats import Comparison, DetectableEffect, SampleRatio

REPORT_FORMAT = 1


@dataclass(frozen=True)
class FunnelRow:
    """One campaign, arm, cascade step and channel. ``audience`` and ``control``
    are per campaign and arm (repeated on each of its rows); ``converted`` and
    ``revenue`` are last-touch: conversions whose latest prior message this was."""

    campaign: str
    arm: str | None
    step: int | None  # None: the arm's enrollees who got no message yet
    channel: str | None
    audience: int
    control: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    unsubscribed: int
    converted: int
    revenue: float
    cost: float


@dataclass(frozen=True)
class Experiment:
    """Treated against the comparison group for one campaign (arm None) or one arm."""

    campaign: str
    arm: str | None
    comparison_group: str  # "control", or "holdout" for a campaign without its own control
    sample_ratio: SampleRatio | None  # None when the configured split is unknown
    conversion: Comparison  # z-test, or Fisher's exact test for small cells; Holm-adjusted
    revenue: Comparison  # revenue per assigned customer, zeros included; Holm-adjusted when it is the primary
    revenue_cuped: Comparison | None  # the primary when present, Holm-adjusted
    detectable_conversion: DetectableEffect
    detectable_revenue: DetectableEffect
    incremental_revenue: float  # difference per customer x treated customers
    incremental_revenue_low: float
    incremental_revenue_high: float
    window_complete: float  # share of enrollees whose attribution window has fully passed

    @property
    def primary(self) -> Comparison:
        """The revenue comparison the verdict is on: revenue per assigned
        customer, CUPED-adjusted when possible. It is one of two tests per row
        (conversion is the other), and a report has many rows, some sharing a
        control: the report's experiments adjust all of them together by Holm
        (Comparison.p_adjusted), and ``significant`` reads the adjusted value."""
        return self.revenue_cuped or self.revenue


@dataclass(frozen=True)
class Economics:
    campaign: str
    message_cost: float
    offer_cost: float | None  # discounts and points spent on redeeming orders; None: the campaign has no offer
    revenue: float  # treated customers' revenue inside the attribution window
    incremental_revenue: float
    drr: float | None  # cost / revenue
    drr_incremental: float | None  # cost / incremental revenue (None when that is not positive)
    drr_forecast: float | None  # as planned when applied; None when no forecast was recorded
    sent: int
    most_expensive_channel: str | None
    cost_on_most_expensive: float  # every sent message priced at that channel
    cascade_savings: float


@dataclass(frozen=True)
class HoldoutView:
    """The global holdout against everyone else, over the report period."""

    holdout_share: float
    customers: int
    holdout_customers: int
    revenue: float  # every customer's revenue in the period
    revenue_per_customer: Comparison | None  # not in holdout vs holdout
    incremental_revenue: float | None
    incremental_revenue_low: float | None
    incremental_revenue_high: float | None
    crm_share: float | None  # incremental revenue / revenue
    attributed_revenue: float  # last touch: revenue in windows after a sent message
    attributed_share: float | None


@dataclass(frozen=True)
class Cohort:
    month: str  # "2026-03"
    customers: int
    retention: tuple[float, ...]  # share active in month 0, 1, 2, ... after the first purchase


@dataclass(frozen=True)
class SegmentValue:
    segment: str
    customers: int
    arpu: float  # period revenue per customer
    ltv: float  # revenue to date per customer since the first purchase


@dataclass(frozen=True)
class MixCell:
    weekday: int  # 0 Monday ... 6 Sunday, in the project's time zone
    channel: str
    orders: int
    revenue: float


@dataclass(frozen=True)
class Analytics:
    rfm_feature: str | None
    rfm_from: date | None
    rfm_to: date | None
    rfm_groups: tuple[str, ...] = ()
    rfm_matrix: tuple[tuple[int, ...], ...] = ()  # [group at rfm_from][group at rfm_to] customers
    cohorts: tuple[Cohort, ...] = ()
    segments: tuple[SegmentValue, ...] = ()
    mix: tuple[MixCell, ...] = ()


@dataclass(frozen=True)
class Report:
    project: str
    currency: str
    timezone: str
    now: datetime
    start: datetime | None
    end: datetime
    window_days: float
    pre_period_days: float
    funnel: tuple[FunnelRow, ...]
    experiments: tuple[Experiment, ...]
    economics: tuple[Economics, ...]
    holdout: HoldoutView | None
    analytics: Analytics | None
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = _plain(self)
        data.pop("timings", None)
        return {"report_format": REPORT_FORMAT, **data}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("significant", "mismatch"):
            if hasattr(type(value), name):
                data[name] = getattr(value, name)
        return data
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value
