"""What the text and Markdown renderings share: money, counts, the summary line."""

from __future__ import annotations

from collections import Counter, defaultdict

from ..planner.plan import CHANGE, CREATE, REMOVE, CampaignChange, Plan, column

SYMBOLS = {"RUB": "₽", "USD": "$", "EUR": "€", "GBP": "£", "KZT": "₸", "UAH": "₴", "TRY": "₺", "INR": "₹", "JPY": "¥", "CNY": "¥"}


def money(amount: float, currency: str) -> str:
    """``₽4,512.30``; an unknown currency as ``4,512.30 XYZ``."""
    sign = "-" if amount < 0 else ""
    symbol = SYMBOLS.get(currency)
    if symbol:
        return f"{sign}{symbol}{abs(amount):,.2f}"
    return f"{sign}{abs(amount):,.2f} {currency}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def summary_line(plan: Plan) -> str:
    """``Plan: 2 campaigns to add, 1 to change, 0 to remove; 12,340 messages now (₽4,512.30); 1 violation.``"""
    added, changed, removed = (len(plan.changes(action)) for action in (CREATE, CHANGE, REMOVE))
    return (
        f"Plan: {count(added, 'campaign')} to add, {changed:,} to change, {removed:,} to remove; "
        f"{count(len(plan.messages), 'message')} now ({money(plan.messages_cost, plan.currency)}); "
        f"{count(len(plan.violations), 'violation')}."
    )


def change_text(change: CampaignChange) -> str:
    """The words after ``campaign NAME`` on a change line."""
    short_new = (change.new_version or "")[:8]
    if change.action == CREATE:
        text = f"new, version {short_new}"
    elif change.action == REMOVE:
        text = f"removed: stop {count(change.in_flight_count, 'enrollment')}"
    elif change.action == CHANGE:
        text = f"changed {(change.old_version or '')[:8]} -> {short_new}: {in_flight_text(change)}"
    else:
        text = f"unchanged, version {short_new}"
        if change.in_flight_count:
            text += f"; {in_flight_text(change)}"
    if not change.enabled:
        text += "; disabled, sends nothing"
    return text


def in_flight_text(change: CampaignChange) -> str:
    n = count(change.in_flight_count, "enrollment")
    if change.in_flight == "migrate":
        return f"migrate {n} in flight to the new version"
    if change.in_flight == "stop":
        return f"stop {n} in flight"
    return f"continue in-flight {n} on the old version"


def held_by_campaign(plan: Plan) -> dict[str, dict[str, int]]:
    held: dict[str, dict[str, int]] = defaultdict(dict)
    for row in plan.held_back:
        held[row.campaign][row.rule] = row.count
    return dict(held)


def deferred_by_campaign(plan: Plan) -> dict[str, Counter]:
    found: dict[str, Counter] = defaultdict(Counter)
    for deferral in plan.deferred:
        found[deferral.campaign][deferral.rule] += 1
    return dict(found)


def forecast_table(plan: Plan) -> tuple[list[str], list[tuple[str, list[int], float]]]:
    """(channels, rows of (day, messages per channel, cost of the day))."""
    channels = sorted({cell.channel for cell in plan.forecast})
    days: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    for cell in plan.forecast:
        days[cell.day.isoformat()][cell.channel] = (cell.messages, cell.cost)
    rows = []
    for day in sorted(days):
        cells = days[day]
        rows.append((day, [cells.get(channel, (0, 0.0))[0] for channel in channels], sum(cost for _, cost in cells.values())))
    return channels, rows


def sms_rows(plan: Plan) -> list[tuple[str, int, str, int | None, int, float]]:
    """(template, parts, encoding, max_parts, messages now, their cost) per SMS template the plan costs by parts."""
    sent: dict[str, list] = {}
    for template, cost in zip(column(plan.messages, "template"), column(plan.messages, "cost")):
        totals = sent.setdefault(template, [0, 0.0])
        totals[0] += 1
        totals[1] += cost
    rows = []
    for estimate in plan.sms_templates:
        n, cost = sent.get(estimate.template, (0, 0.0))
        rows.append((estimate.template, estimate.parts, estimate.encoding, estimate.max_parts, n, round(cost, 6)))
    return rows



OFFER_COLUMNS = ("campaign", "offer", "audience", "threshold", "amount", "conversion", "check", "revenue", "cost", "DRR", "limit", "payback")


def offer_forecast_rows(plan: Plan) -> list[tuple[str, ...]]:
    """The offer forecast as text cells, in OFFER_COLUMNS order; DRR over its limit ends with " !"."""
    cur = plan.currency
    rows = []
    for row in plan.offer_forecast:
        drr = f"{row.drr:.1%}" if row.drr is not None else "—"
        rows.append((
            row.campaign + (f" / {row.arm}" if row.arm else ""),
            f"{row.offer}: {row.terms}",
            f"{row.audience:,}",
            money(row.threshold, cur) if row.threshold is not None else "—",
            money(row.amount, cur),
            f"{row.conversion:.2%}",
            money(row.check, cur),
            money(row.revenue, cur),
            money(row.cost, cur),
            drr + (" !" if row.over_limit else ""),
            f"{row.limit:.0%}",
            f"{row.payback:,.1f}x" if row.payback is not None else "—",
        ))
    return rows
