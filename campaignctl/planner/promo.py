"""Promo pools in the plan: a pool with fewer codes left than the plan would
draw from it is a violation (rule ``promo_pool``), so the pull request that
would run a pool dry fails CI instead of apply failing mid-campaign.

What draws a code: every message of the plan carrying an offer with
``promo_codes``, and every active treatment enrollment of the plan whose next
step carries one (a step deferred by quiet hours still needs its code), each
counted once per holder (campaign/customer/offer; campaign/*/offer for a shared
code) and not counted when the holder has its code already. Codes left come
from the state snapshot (``promo_codes_left``, by executor.take_snapshot).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from types import MappingProxyType
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo

import numpy as np

from ..arrays import sorted_union
from ..issuing import issue_key, pool_of, shared_holder
from ..model import Campaign, Project
from .plan import EnrollmentAction, MessageAction, Violation
from .snapshot import StateSnapshot

RULE = "promo_pool"


def pooled_offers(project: Project) -> dict[str, tuple[str, bool]]:
    """offer -> (pool, per customer), for the offers that hand out promo codes."""
    return {name: found for name, offer in project.offers.items() if (found := pool_of(offer)) is not None}


def wanted(project: Project, messages: Iterable[MessageAction], enrollments: Iterable[EnrollmentAction]) -> dict[tuple[str, str], list]:
    """(campaign, pooled offer) -> the customers (a list of ids, or of arrays of
    ids) the messages and the active treatment enrollments draw codes for."""
    pooled = pooled_offers(project)
    found: dict[tuple[str, str], list] = defaultdict(list)
    for m in messages:
        if m.offer in pooled:
            found[(m.campaign, m.offer)].append(m.customer_id)
    step_offers: dict[tuple[str, int, str | None], str | None] = {}  # few distinct (campaign, step, arm)
    for e in enrollments:
        if e.status != "active" or e.group != "treatment":
            continue
        memo = (e.campaign, e.step, e.arm)
        if memo not in step_offers:
            step_offers[memo] = step_offer(project, e.campaign, e.step, e.arm)
        if step_offers[memo] in pooled:
            found[(e.campaign, step_offers[memo])].append(e.customer_id)
    return found


def pool_violations(project: Project, wanted: Mapping[tuple[str, str], list], state: StateSnapshot, now: datetime) -> list[Violation]:
    """The pools this plan would run dry or hand out after they expired; ``wanted`` as :func:`wanted` gives it."""
    if not project.promo_pools:
        return []
    pooled = pooled_offers(project)
    draws: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # pool -> campaign -> new holders
    for (campaign, offer), customers in sorted(wanted.items()):
        pool, per_customer = pooled[offer]
        holding = state.promo_code_holders.get(pool, frozenset())
        if per_customer:
            # Holders (campaign/customer/offer) differ across (campaign, offer): counting
            # each pair's distinct customers counts the distinct holders.
            ids = sorted_union([np.atleast_1d(c) for c in customers]).tolist()
            count = sum(1 for c in ids if issue_key(campaign, c, offer) not in holding) if holding else len(ids)
        else:
            count = 0 if shared_holder(campaign, offer) in holding else 1
        if count:
            draws[pool][campaign] += count
    found = [v for pool, by_campaign in sorted(draws.items()) if (v := _too_small(project, pool, by_campaign, state))]
    found += _expired(project, draws, now)
    return found


def step_offer(project: Project, name: str, step: int, arm: str | None) -> str | None:
    """As Flow.offer_for, from the project: the offer of campaign ``name``'s step
    ``step`` (its own, else the arm's, else the campaign's); None past the last step."""
    campaign = project.campaigns.get(name)
    return _step_offer(project, campaign, step, arm) if campaign is not None else None


def _step_offer(project: Project, campaign: Campaign, step: int, arm: str | None) -> str | None:
    if campaign.cascade:
        steps = project.cascades[campaign.cascade].steps
        own = steps[step].offer if 0 <= step < len(steps) else None
        if step >= len(steps):
            return None
    else:
        own = campaign.message.offer if campaign.message and step == 0 else None
        if step > 0:
            return None
    chosen = next((a for a in campaign.arms if a.name == arm), None)
    return own or (chosen.offer if chosen else None) or campaign.offer


def _too_small(project: Project, pool: str, by_campaign: dict[str, int], state: StateSnapshot) -> Violation | None:
    spec = project.promo_pools[pool]
    left = state.promo_codes_left.get(pool, spec.size if spec.source == "generate" else None)
    needed = sum(by_campaign.values())
    if left is None or needed <= left:
        return None
    campaigns = sorted(by_campaign)
    split = ", ".join(f"{name} {by_campaign[name]:,}" for name in campaigns)
    more = f"more lines in {spec.file.name}" if spec.source == "import" else "a larger size"
    return Violation(
        RULE, campaigns[0] if len(campaigns) == 1 else None,
        f"promo pool {pool} has {left:,} code(s) left but this plan draws {needed:,} ({split}); "
        f"give the pool {more}, or narrow the audience",
        MappingProxyType({"left": float(left), "needed": float(needed), "short_by": float(needed - left)}),
    )


def _expired(project: Project, draws: dict[str, dict[str, int]], now: datetime) -> list[Violation]:
    """A pool whose fixed validity ended would hand out codes no till accepts."""
    today = now.astimezone(ZoneInfo(project.timezone)).date()
    found = []
    for pool in sorted(draws):
        expires = project.promo_pools[pool].expires
        if expires.get("to") and date.fromisoformat(str(expires["to"])) < today:
            campaigns = sorted(draws[pool])
            found.append(Violation(
                RULE, campaigns[0] if len(campaigns) == 1 else None,
                f"promo pool {pool} expired on {expires['to']}; this plan would hand its codes out to "
                f"{sum(draws[pool].values()):,} customer(s) of {', '.join(campaigns)}",
                MappingProxyType({"days_expired": float((today - date.fromisoformat(str(expires['to']))).days)}),
            ))
    return found
