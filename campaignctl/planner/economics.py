"""Offer forecast and the DRR launch gate (docs/plan.md, "Offer forecast").

Per campaign with an offer, and per arm: the treated customers who would be
messaged, the share of them expected to buy (their own history over a
look-back, or the YAML's override), the check they make and what the offer
costs for it (campaignctl.offers.terms), plus every step's messages ->
revenue, cost, DRR = cost / revenue and payback = revenue / cost. A row over
its policies.drr_limits entry is a ``drr`` violation.

Arithmetic is exact (fractions) throughout; only the outputs are rounded,
half up: money to 2 places (kopecks), shares to 6, DRR to 4 and payback to 2;
DRR and payback are computed from the rounded revenue and cost, so the
numbers in a plan can be checked by hand from each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from ..arrays import unique_small
from ..model import Project
from ..offers.history import CustomerHistory, HistorySpec, segment_history
from ..offers.terms import BuyerValue, buyer_value, describe_terms, half_up, limit_kind, money, threshold, validity_days
from ..segments.periods import parse_duration
from .plan import OfferForecast, Violation

DEFAULT_LOOKBACK = timedelta(days=365)
DEFAULT_WINDOW = timedelta(days=14)


# --------------------------------------------------------------------------- what each campaign offers


def campaign_offers(project: Project, name: str) -> list[tuple[str | None, tuple[str, ...]]]:
    """(arm, the offers its customers can get) for a campaign: a step's own
    offer, else the arm's, else the campaign's (as Flow.offer_for). Campaigns
    without any offer give []."""
    campaign = project.campaigns[name]
    if campaign.cascade:
        step_offers = [step.offer for step in project.cascades[campaign.cascade].steps]
    else:
        step_offers = [campaign.message.offer if campaign.message else None]
    result = []
    for arm in campaign.arms or (None,):
        fallback = (arm.offer if arm is not None else None) or campaign.offer
        offers = tuple(sorted({offer or fallback for offer in step_offers} - {None}))
        if offers:
            result.append((arm.name if arm is not None else None, offers))
    return result


def overrides(project: Project, campaign: str, offer: str) -> dict[str, Any]:
    """The forecast overrides in force: the offer's `forecast`, then the campaign's on top."""
    merged = dict(project.offers[offer].spec.get("forecast") or {})
    merged.update(project.campaigns[campaign].spec.get("forecast") or {})
    return merged


def history_spec(project: Project, campaign: str, offer: str) -> HistorySpec:
    """Look-back (default 365d) and conversion window (default: how long the
    offer is valid, else 14d), each overridable as forecast.lookback / forecast.window."""
    given = overrides(project, campaign, offer)
    lookback = parse_duration(given["lookback"]) if "lookback" in given else DEFAULT_LOOKBACK
    if "window" in given:
        window = parse_duration(given["window"])
    else:
        days = validity_days(project.offers[offer].spec)
        window = timedelta(days=days) if days else DEFAULT_WINDOW
    if window <= timedelta(0) or lookback <= timedelta(0):
        raise ValueError(f"campaign {campaign}, offer {offer}: forecast.lookback and forecast.window must be longer than 0")
    return HistorySpec(lookback, window)


def needed_history(project: Project) -> set[HistorySpec]:
    """Every history spec the forecast of ``project`` reads (executor loads them in one query)."""
    return {
        history_spec(project, name, offer)
        for name, campaign in project.campaigns.items() if campaign.enabled
        for _, offers in campaign_offers(project, name)
        for offer in offers
    }


# --------------------------------------------------------------------------- the forecast


@dataclass(frozen=True)
class _Audience:
    audience: int
    reached: int
    message_cost: Fraction


def offer_forecasts(planner, history: Mapping[HistorySpec, CustomerHistory]) -> tuple[list[OfferForecast], list[Violation]]:
    """The forecast rows of every enabled campaign with an offer, and the DRR
    violations. Who gets messages is worked out for every campaign before the
    first read of ``history``, which may still be on its way."""
    project: Project = planner.project
    audiences = []
    for name, flow in planner.flows.items():
        if not flow.enabled or name not in project.campaigns:
            continue
        offered = campaign_offers(project, name)
        if not offered:
            continue
        eligible, _, arms, in_treatment = planner.assigned(flow)
        for arm, offers in offered:
            treated = eligible[in_treatment & (arms == arm) if arm is not None else in_treatment]
            audiences.append((name, arm, offers, eligible, _messaged(planner, flow, treated)))
    rows, violations = [], []
    for name, arm, offers, eligible, audience in audiences:
        candidates = [_row(project, name, arm, offer, eligible, audience, history) for offer in offers]
        # A cascade that improves its offer step by step: every buyer is costed at the
        # dearest one (an upper bound, like the 7-day message forecast).
        row = max(candidates, key=lambda r: (r.incentive_cost, r.offer))
        rows.append(row)
        if row.over_limit:
            violations.append(_violation(row))
    return rows, violations


def _messaged(planner, flow, treated: np.ndarray) -> _Audience:
    """Who of ``treated`` would get messages (not suppressed as inactive), how
    many of them some step reaches, and the cost of every step to those it
    reaches: steps are resolved once per reach class (customers whom the same
    channels reach), a column at a time."""
    rows = planner.facts.rows_of(treated)
    known = rows >= 0
    active = ~(known & planner.inactive_rows[np.where(known, rows, 0)])
    ids = treated[active]
    _, first, counts = unique_small(planner.reach_classes(ids, rows[active]), return_index=True, return_counts=True)
    reached, cost = 0, Fraction(0)
    for customer_id, count in zip(ids[first].tolist(), counts.tolist()):
        resolved = [planner.resolve(step, customer_id) for step in flow.steps]
        costs = [money(r[2]) for r in resolved if not isinstance(r, str)]
        if costs:
            reached += count
            cost += sum(costs, Fraction(0)) * count
    return _Audience(len(ids), reached, cost)


def _row(project: Project, campaign: str, arm: str | None, offer: str, eligible: np.ndarray, audience: _Audience,
         history: Mapping[HistorySpec, CustomerHistory]) -> OfferForecast:
    spec = project.offers[offer].spec
    given = overrides(project, campaign, offer)
    wanted = history_spec(project, campaign, offer)
    if wanted not in history:
        raise ValueError(f"campaign {campaign}: no order history for look-back {wanted.lookback.days}d / window {wanted.window.days}d "
                         "(load it with campaignctl.offers.history.load_history for planner.economics.needed_history(project))")
    past = segment_history(history[wanted], eligible)
    conversion = money(given["conversion"]) if "conversion" in given else past.conversion
    conversion_from = _source(project, campaign, offer, "conversion")
    average_check = money(given["average_check"]) if "average_check" in given else past.average_check
    average_items = money(given["average_items"]) if "average_items" in given else past.average_items
    redemption = money(given.get("redemption_rate", 1))
    buyer: BuyerValue = buyer_value(spec, average_check, average_items)
    buyers = audience.reached * conversion
    revenue = _cents(buyers * buyer.check)
    incentive_cost = _cents(buyers * buyer.incentive * redemption)
    message_cost = _cents(audience.message_cost)
    cost = incentive_cost + message_cost
    kind = spec["kind"]
    limit = float(project.policies.drr_limits.get(limit_kind(kind), 1.0))
    found_threshold = threshold(spec)
    return OfferForecast(
        campaign=campaign, arm=arm, offer=offer, offer_kind=kind, limit_kind=limit_kind(kind), terms=describe_terms(spec),
        lookback_days=wanted.lookback / timedelta(days=1), window_days=wanted.window / timedelta(days=1),
        audience=audience.audience, reached=audience.reached,
        conversion=float(half_up(conversion, 6)), conversion_from=conversion_from,
        average_check=float(_cents(average_check)), check=float(_cents(buyer.check)), items=float(half_up(buyer.items, 2)),
        threshold=float(found_threshold) if found_threshold is not None else None, amount=float(_cents(buyer.incentive)),
        redemption_rate=float(redemption), buyers=float(_cents(buyers)), revenue=float(revenue), incentive_cost=float(incentive_cost),
        message_cost=float(message_cost), cost=float(cost),
        drr=float(half_up(Fraction(cost) / Fraction(revenue), 4)) if revenue else None, limit=limit,
        payback=float(half_up(Fraction(revenue) / Fraction(cost), 2)) if cost else None,
    )


def _source(project: Project, campaign: str, offer: str, key: str) -> str:
    if key in (project.campaigns[campaign].spec.get("forecast") or {}):
        return "campaign"
    if key in (project.offers[offer].spec.get("forecast") or {}):
        return "offer"
    return "history"


def _cents(value: Fraction) -> Decimal:
    return half_up(value, 2)


def _violation(row: OfferForecast) -> Violation:
    who = f"campaign {row.campaign}" + (f" arm {row.arm}" if row.arm else "")
    basis = (f"cost {row.cost:,.2f} (offer {row.offer} '{row.terms}': {row.incentive_cost:,.2f} + messages {row.message_cost:,.2f}) "
             f"/ revenue {row.revenue:,.2f} ({row.reached:,} reached x {row.conversion:.2%} conversion x {row.check:,.2f} check)")
    if row.drr is None:
        message = (f"{who}: forecast revenue is 0 against a cost of {row.cost:,.2f}: {basis}; "
                   "the audience has no orders in the look-back; set forecast.conversion and forecast.average_check on the offer or campaign")
    else:
        message = f"{who}: forecast DRR {row.drr:.2%} is over the {row.limit_kind} limit {row.limit:.2%}: {basis}"
    numbers = {"limit": row.limit, "revenue": row.revenue, "cost": row.cost,
               "incentive_cost": row.incentive_cost, "message_cost": row.message_cost, "reached": float(row.reached),
               "conversion": row.conversion, "check": row.check, "amount": row.amount}
    if row.drr is not None:
        numbers["drr"] = row.drr
    return Violation("drr", row.campaign, message, MappingProxyType(numbers))
