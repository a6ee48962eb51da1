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
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from ..issuing import issue_key, pool_of, shared_holder
from ..model import Campaign, Project
from .plan import EnrollmentAction, MessageAction, Violation
from .snapshot import StateSnapshot

RULE = "promo_pool"


def pool_violations(project: Project, messages: Sequence[MessageAction], enrollments: Iterable[EnrollmentAction],
                    state: StateSnapshot, now: datetime) -> list[Violation]:
    if not project.promo_pools:
        return []
    draws: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # pool -> campaign -> holders

    def draw(campaign: str, customer_id: int, offer_name: str | None) -> None:
        offer = project.offers.get(offer_name) if offer_name else None
        pooled = pool_of(offer) if offer is not None else None
        if pooled is None:
            return
        pool, per_customer = pooled
        holder = issue_key(campaign, customer_id, offer_name) if per_customer else shared_holder(campaign, offer_name)
        if holder not in state.promo_code_holders.get(pool, ()):
            draws[pool][campaign].add(holder)

    for m in messages:
        draw(m.campaign, m.customer_id, m.offer)
    for e in enrollments:
        campaign = project.campaigns.get(e.campaign)
        if campaign is not None and e.status == "active" and e.group == "treatment":
            draw(e.campaign, e.customer_id, _step_offer(project, campaign, e.step, e.arm))
    found = [v for pool, by_campaign in sorted(draws.items()) if (v := _too_small(project, pool, by_campaign, state))]
    found += _expired(project, draws, now)
    return found


def _step_offer(project: Project, campaign: Campaign, step: int, arm: str | None) -> str | None:
    """As Flow.offer_for: a step's own offer, else the arm's, else the campaign's."""
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


def _too_small(project: Project, pool: str, by_campaign: dict[str, set[str]], state: StateSnapshot) -> Violation | None:
    spec = project.promo_pools[pool]
    left = state.promo_codes_left.get(pool, spec.size if spec.source == "generate" else None)
    needed = len(set().union(*by_campaign.values()))
    if left is None or needed <= left:
        return None
    campaigns = sorted(by_campaign)
    split = ", ".join(f"{name} {len(by_campaign[name]):,}" for name in campaigns)
    more = f"more lines in {spec.file.name}" if spec.source == "import" else "a larger size"
    return Violation(
        RULE, campaigns[0] if len(campaigns) == 1 else None,
        f"promo pool {pool} has {left:,} code(s) left but this plan draws {needed:,} ({split}); "
        f"give the pool {more}, or narrow the audience",
        MappingProxyType({"left": float(left), "needed": float(needed), "short_by": float(needed - left)}),
    )


def _expired(project: Project, draws: dict[str, dict[str, set[str]]], now: datetime) -> list[Violation]:
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
                f"{sum(len(h) for h in draws[pool].values()):,} customer(s) of {', '.join(campaigns)}",
                MappingProxyType({"days_expired": float((today - date.fromisoformat(str(expires['to']))).days)}),
            ))
    return found
