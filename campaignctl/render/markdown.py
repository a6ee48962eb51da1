"""A plan as a pull-request comment: the summary, violations first and loud,
a table of audiences with per-channel volumes and cost, messages per channel,
the forecast, and the per-campaign detail folded in ``<details>``."""

from __future__ import annotations

from ..planner.plan import CHANGE, CREATE, REMOVE, Plan
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

ICON = {CREATE: "➕ new", CHANGE: "✏️ changed", REMOVE: "➖ removed"}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(plan: Plan) -> str:
    cur = plan.currency
    out = [f"### campaignctl plan: `{plan.project}`", "", f"**{summary_line(plan)}**", ""]
    if plan.violations:
        out.append(f"> [!CAUTION]\n> **{count(len(plan.violations), 'violation')}**: `plan --detailed-exitcode` fails until they are fixed.")
        out.append("")
        out += ["| rule | campaign | what |", "|---|---|---|"]
        for v in plan.violations:
            out.append(f"| **{_cell(v.rule)}** | {_cell(v.campaign or '—')} | {_cell(v.message)} |")
        out.append("")
    changes = {c.name: c for c in plan.campaign_changes}
    audiences = {a.campaign: a for a in plan.audiences}
    names = sorted(set(changes) | set(audiences))
    by_campaign = plan.messages_by_campaign()
    if names:
        out += ["| campaign | change | audience | eligible | treatment | control | holdout | entering | messages now | cost now |",
                "|---|---|---|--:|--:|--:|--:|--:|---|--:|"]
        for name in names:
            change = changes.get(name)
            a = audiences.get(name)
            what = ICON.get(change.action, "") if change else ""
            per_channel = by_campaign.get(name, {})
            volumes = ", ".join(f"{channel} {n:,}" for channel, (n, _) in per_channel.items()) or "—"
            cost = sum(c for _, c in per_channel.values())
            if a is None:
                out.append(f"| `{name}` | {what} | — | — | — | — | — | — | {volumes} | {money(cost, cur)} |")
            else:
                out.append(f"| `{name}` | {what} | {a.segment} ({a.members:,}) | {a.eligible:,} | {a.treatment:,} | {a.control:,} | "
                           f"{a.holdout:,} | {a.entering:,} | {volumes} | {money(cost, cur)} |")
        out.append("")
    by_channel = plan.messages_by_channel()
    channels, rows = forecast_table(plan)
    week = {channel: [0, 0.0] for channel in channels}
    for cell in plan.forecast:
        week[cell.channel][0] += cell.messages
        week[cell.channel][1] += cell.cost
    all_channels = sorted(set(by_channel) | set(week))
    if all_channels:
        out += ["| channel | messages now | cost now | next 7 days | cost, 7 days |", "|---|--:|--:|--:|--:|"]
        for channel in all_channels:
            n, cost = by_channel.get(channel, (0, 0.0))
            wn, wcost = week.get(channel, (0, 0.0))
            out.append(f"| {channel} | {n:,} | {money(cost, cur)} | {wn:,} | {money(wcost, cur)} |")
        out.append("")
    sms = sms_rows(plan)
    if sms:
        out += ["| SMS template | parts | encoding | max parts | messages now | cost now |", "|---|--:|---|--:|--:|--:|"]
        for template, parts, coding, max_parts, n, cost in sms:
            out.append(f"| `{template}` | {parts} | {coding} | {max_parts if max_parts is not None else '—'} | {n:,} | {money(cost, cur)} |")
        out.append("")
    offers = offer_forecast_rows(plan)
    if offers:
        out += ["**Offer forecast** (audience × conversion × check against the offer and the messages; DRR = cost / revenue)", "",
                "| " + " | ".join(OFFER_COLUMNS) + " |", "|---|---|" + "--:|" * (len(OFFER_COLUMNS) - 2)]
        for cells in offers:
            out.append("| " + " | ".join(cells).replace("!", "⚠️") + " |")
        out.append("")
    out += ["<details><summary>Per-campaign detail</summary>", ""]
    held = held_by_campaign(plan)
    deferred = deferred_by_campaign(plan)
    for name in names:
        change = changes.get(name)
        out.append(f"#### `{name}`")
        if change:
            out.append(f"- {change_text(change)}")
        a = audiences.get(name)
        if a is not None:
            arms = ", ".join(f"{arm} {n:,}" for arm, n in a.arms)
            out.append(f"- audience `{a.segment}`: {a.members:,} members, {a.eligible:,} eligible; treatment {a.treatment:,}"
                       f"{' (' + arms + ')' if arms else ''}, control {a.control:,}, holdout {a.holdout:,}; entering {a.entering:,}")
        for channel, (n, cost) in by_campaign.get(name, {}).items():
            out.append(f"- {channel}: {n:,} messages now, {money(cost, cur)}")
        if name in deferred:
            out.append("- deferred: " + ", ".join(f"{rule} {n:,}" for rule, n in sorted(deferred[name].items())))
        if name in held:
            out.append("- held back: " + ", ".join(f"{rule} {n:,}" for rule, n in sorted(held[name].items())))
        out.append("")
    if rows:
        out += ["#### Forecast, next 7 days", "", "| day | " + " | ".join(channels) + " | cost |",
                "|---|" + "--:|" * len(channels) + "--:|"]
        for day, counts, cost in rows:
            out.append(f"| {day} | " + " | ".join(f"{n:,}" for n in counts) + f" | {money(cost, cur)} |")
        out.append("")
    out += ["</details>", "", f"<sub>state {plan.state_fingerprint[:12]} · {plan.now.isoformat()}</sub>"]
    return "\n".join(out) + "\n"
