"""A plan for the terminal, Terraform-like: ``+ ~ -`` per campaign, audiences,
messages now per channel with cost, deferred and held back by rule, the 7-day
forecast, violations, and the summary line last."""

from __future__ import annotations

from ..planner.plan import CHANGE, CREATE, REMOVE, UNCHANGED, Plan
from .common import (
    OFFER_COLUMNS,
    change_text,
    count,
    deferred_by_campaign,
    forecast_table,
    held_by_campaign,
    money,
    offer_forecast_rows,
    sms_rows,
    summary_line,
)

MARK = {CREATE: "+", CHANGE: "~", REMOVE: "-", UNCHANGED: " "}


def render_text(plan: Plan) -> str:
    cur = plan.currency
    out = [f"campaignctl plan for {plan.project} at {plan.now.isoformat()} (state {plan.state_fingerprint[:12]})", ""]
    out.append("Campaigns:")
    for change in plan.campaign_changes:
        out.append(f"  {MARK[change.action]} campaign {change.name} ({change_text(change)})")
    audiences = [a for a in plan.audiences]
    if audiences:
        out += ["", "Audiences:"]
        width = max(len(a.campaign) for a in audiences)
        for a in audiences:
            arms = ""
            if a.arms:
                arms = " (" + ", ".join(f"{name} {n:,}" for name, n in a.arms) + ")"
            line = (f"  {a.campaign:<{width}}  {a.segment}: {a.members:,} members, {a.eligible:,} eligible -> "
                    f"treatment {a.treatment:,}{arms}, control {a.control:,}, holdout {a.holdout:,}; entering {a.entering:,}")
            if a.suppressed:
                line += f"; {a.suppressed:,} suppressed"
            out.append(line)
    out += ["", "Messages now:"]
    by_channel = plan.messages_by_channel()
    if by_channel:
        width = max(len(channel) for channel in by_channel)
        for channel, (n, cost) in by_channel.items():
            out.append(f"  {channel:<{width}}  {n:>10,}  {money(cost, cur)}")
        for campaign, per_channel in plan.messages_by_campaign().items():
            parts = ", ".join(f"{channel} {n:,} ({money(cost, cur)})" for channel, (n, cost) in per_channel.items())
            out.append(f"    {campaign}: {parts}")
    else:
        out.append("  none")
    sms = sms_rows(plan)
    if sms:
        out += ["", "SMS templates (cost per part):"]
        for template, parts, coding, max_parts, n, cost in sms:
            limit = f" of max {max_parts}" if max_parts is not None else ""
            out.append(f"  {template}: {parts} part(s){limit}, {coding}; {n:,} now, {money(cost, cur)}")
    deferred = deferred_by_campaign(plan)
    if deferred:
        out += ["", f"Deferred ({count(len(plan.deferred), 'message')}, sent later, never dropped):"]
        for campaign, rules in sorted(deferred.items()):
            out.append(f"  {campaign}: " + ", ".join(f"{rule} {n:,}" for rule, n in sorted(rules.items())))
    held = held_by_campaign(plan)
    if held:
        out += ["", "Held back:"]
        for campaign, rules in sorted(held.items()):
            out.append(f"  {campaign}: " + ", ".join(f"{rule} {n:,}" for rule, n in sorted(rules.items())))
    channels, rows = forecast_table(plan)
    if rows:
        out += ["", "Forecast, next 7 days (messages per channel, cost):"]
        widths = [max(len(channel), 8) for channel in channels]
        out.append("  " + "day         " + "  ".join(f"{channel:>{w}}" for channel, w in zip(channels, widths)) + "  cost")
        for day, counts, cost in rows:
            out.append("  " + f"{day}  " + "  ".join(f"{n:>{w},}" for n, w in zip(counts, widths)) + f"  {money(cost, cur)}")
    offers = offer_forecast_rows(plan)
    if offers:
        out += ["", "Offer forecast (audience x conversion x check against the offer and the messages; DRR = cost / revenue):"]
        widths = [max(len(cells[i]) for cells in [OFFER_COLUMNS, *offers]) for i in range(len(OFFER_COLUMNS))]
        for cells in [OFFER_COLUMNS, *offers]:
            out.append("  " + "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))).rstrip())
    if plan.violations:
        out += ["", "Violations:"]
        for v in plan.violations:
            out.append(f"  ! {v.rule}{' ' + v.campaign if v.campaign else ''}: {v.message}")
    out += ["", summary_line(plan)]
    return "\n".join(out) + "\n"
