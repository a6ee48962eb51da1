"""What campaigns cost against what they brought: DRR (cost / revenue) actual
against the plan's forecast, cascade savings, and the global-holdout view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model import Project
from . import stats
from .model import Economics, Experiment, HoldoutView

if TYPE_CHECKING:
    import duckdb


def economics(project: Project, db: duckdb.DuckDBPyConnection, experiments: Sequence[Experiment], store: Any, source: Any,
              until: datetime) -> tuple[Economics, ...]:
    overall = {e.campaign: e for e in experiments if e.arm is None}
    forecasts = recorded_forecasts(store)
    rows = db.execute("""
        WITH spend AS (SELECT m.campaign, COUNT(*) AS sent, SUM(m.cost) AS cost FROM msg m
                       JOIN outcomes o ON o.campaign = m.campaign AND o.customer_id = m.customer_id GROUP BY ALL),
             used AS (SELECT campaign, LIST(DISTINCT channel) AS channels FROM msg GROUP BY ALL),
             revenue AS (SELECT campaign, SUM(revenue) FILTER (WHERE grp = 'treatment') AS revenue FROM outcomes GROUP BY ALL)
        SELECT r.campaign, COALESCE(s.sent, 0), COALESCE(s.cost, 0), COALESCE(r.revenue, 0), COALESCE(u.channels, [])
        FROM revenue r LEFT JOIN spend s USING (campaign) LEFT JOIN used u USING (campaign) ORDER BY 1
    """).fetchall()
    found = []
    for campaign, sent, message_cost, revenue, used in rows:
        incremental = overall[campaign].incremental_revenue if campaign in overall else 0.0
        offer_cost = redeemed_cost(project, source, store, db, campaign, until)
        cost = float(message_cost) + (offer_cost or 0.0)
        expensive = most_expensive_channel(project, campaign, used)
        top_cost = project.channels[expensive].cost * sent if expensive else float(message_cost)
        found.append(Economics(
            campaign=campaign, message_cost=float(message_cost), offer_cost=offer_cost, revenue=float(revenue),
            incremental_revenue=incremental,
            drr=cost / revenue if revenue > 0 else None,
            drr_incremental=cost / incremental if incremental > 0 else None,
            drr_forecast=forecasts.get(campaign),
            sent=int(sent), most_expensive_channel=expensive, cost_on_most_expensive=top_cost,
            cascade_savings=top_cost - float(message_cost),
        ))
    return tuple(found)


def most_expensive_channel(project: Project, campaign: str, used: Sequence[str]) -> str | None:
    """The dearest channel the campaign could have sent on: its cascade's (or
    message's) channels, a "cheapest" step counting every channel of its
    template kinds, and any channel the ledger shows it used."""
    candidates = {name for name in used if name in project.channels}
    definition = project.campaigns.get(campaign)
    if definition is not None:
        steps = [definition.message] if definition.message else []
        if definition.cascade and definition.cascade in project.cascades:
            steps += list(project.cascades[definition.cascade].steps)
        for step in steps:
            if step.channel == "cheapest":
                candidates |= {name for name, channel in project.channels.items() if channel.kind in step.templates}
            elif step.channel in project.channels:
                candidates.add(step.channel)
    return max(sorted(candidates), key=lambda name: project.channels[name].cost, default=None)


# -- what the offers work records, read defensively -----------------------------

RUNS_SEARCHED = 1000  # apply runs looked through for the forecast made at launch


def recorded_forecasts(store: Any) -> dict[str, float]:
    """campaign -> the DRR its offer forecast gave when apply first acted on it
    (apply keeps ``summary["offer_forecast"]`` per run; arms add up). A campaign
    missing here shows "no forecast recorded"."""
    found: dict[str, float] = {}
    runs = store.runs(RUNS_SEARCHED) if store is not None and hasattr(store, "runs") else []
    for run in runs:  # newest first: an older run's forecast replaces a newer one's
        by_campaign: dict[str, list[float]] = {}
        for row in (run.summary or {}).get("offer_forecast") or ():
            totals = by_campaign.setdefault(row.get("campaign"), [0.0, 0.0])
            totals[0] += float(row.get("cost") or 0)
            totals[1] += float(row.get("revenue") or 0)
        found.update({campaign: cost / revenue for campaign, (cost, revenue) in by_campaign.items() if revenue > 0})
    return found


def campaign_offers(project: Project, campaign: str) -> list[str]:
    """Offers a campaign hands out: its own, its arms', its cascade steps'."""
    definition = project.campaigns.get(campaign)
    if definition is None:
        return []
    names = [definition.offer] + [arm.offer for arm in definition.arms]
    steps = [definition.message] if definition.message else []
    if definition.cascade and definition.cascade in project.cascades:
        steps += list(project.cascades[definition.cascade].steps)
    names += [step.offer for step in steps]
    return sorted({name for name in names if name and name in project.offers})


def redeemed_cost(project: Project, source: Any, store: Any, db: duckdb.DuckDBPyConnection, campaign: str, until: datetime) -> float | None:
    """Discounts and points spent on the orders that redeemed the campaign's
    offers (campaignctl.offers.redemptions: by issued codes, a pool prefix, or
    points spent by treated customers) between the first entry and ``until``;
    None for a campaign without offers."""
    from ..offers.redemptions import redemptions

    offers = campaign_offers(project, campaign)
    if not offers:
        return None
    # Epoch microseconds: DuckDB hands out time-zone-aware values only through pytz.
    first, treated = db.execute("SELECT epoch_us(MIN(entered_at)), LIST(customer_id) FROM outcomes WHERE campaign = ? AND grp = 'treatment'",
                                [campaign]).fetchone()
    if first is None:
        return 0.0
    since = datetime.fromtimestamp(first / 1e6, timezone.utc)
    codes: dict[str, list[str]] = {}
    for issued in store.issued_offers(campaign) if store is not None else ():
        if issued.code:
            codes.setdefault(issued.offer, []).append(issued.code)
    found = redemptions(project, source, offers, since, until, codes=codes or None, customers=treated)
    return float(sum(r.discount + r.bonus_spent for r in found.values()))


# -- the global holdout ---------------------------------------------------------


def holdout_view(project: Project, customer_ids: np.ndarray, period_revenue: np.ndarray, attributed_revenue: float) -> HoldoutView:
    """Everyone outside the global holdout against the holdout, per customer
    over the period: the difference x customers outside it is what CRM as a
    whole added (incremental revenue); its share of all revenue is CRM's share."""
    from ..planner.hashing import assignments

    share = project.policies.global_holdout
    total = float(period_revenue.sum())
    if share <= 0 or len(customer_ids) == 0:
        return HoldoutView(share, len(customer_ids), 0, total, None, None, None, None, None, attributed_revenue,
                           attributed_revenue / total if total else None)
    held = assignments(project.name, "", customer_ids) < share
    comparison = stats.welch(period_revenue[~held], period_revenue[held], "revenue_per_customer")
    reached = int((~held).sum())
    incremental = comparison.difference * reached
    return HoldoutView(
        holdout_share=share, customers=len(customer_ids), holdout_customers=int(held.sum()), revenue=total,
        revenue_per_customer=comparison, incremental_revenue=incremental,
        incremental_revenue_low=comparison.ci_low * reached, incremental_revenue_high=comparison.ci_high * reached,
        crm_share=incremental / total if total else None,
        attributed_revenue=attributed_revenue, attributed_share=attributed_revenue / total if total else None,
    )
