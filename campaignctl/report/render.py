"""A report as text for the terminal, Markdown for a pull request or wiki,
JSON for machines; the HTML page is in html.py. Text and Markdown show the
same sections (:func:`sections`), so they never disagree."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from .model import Experiment, Report
from .stats import MIN_EXPECTED_CELL, PERMUTATION_BELOW, Comparison

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Section:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = field(default=())
    numeric_from: int = 1  # columns from this one on are right-aligned


def money(value: float | None, currency: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{round(value) or 0:,}" + (f" {currency}" if currency else "")  # never "-0"


def percent(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value * 100:{'+' if signed else ''}.{digits}f}%"


def points(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:+.2f} pt"


def p_value(value: float) -> str:
    if math.isnan(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def interval(low: float | None, high: float | None, fmt) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "–"
    return f"[{fmt(low)}, {fmt(high)}]"


def verdict(comparison: Comparison) -> str:
    """On the adjusted p-value when the comparison is one of the report's family (Comparison.significant)."""
    if math.isnan(comparison.p_value):
        return "too few customers"
    if not comparison.significant:
        return "no significant difference"
    return "significant uplift" if comparison.difference > 0 else "significant drop"


def experiment_name(e: Experiment) -> str:
    return e.campaign if e.arm is None else f"{e.campaign} / {e.arm}"


def sections(report: Report) -> list[Section]:
    cur = report.currency
    found = [_incrementality(report, cur), _funnel(report, cur), _economics(report, cur)]
    if report.holdout is not None:
        found.append(_holdout(report, cur))
    if report.analytics is not None:
        found += _analytics(report, cur)
    return [s for s in found if s.rows or s.notes]


def _incrementality(report: Report, cur: str) -> Section:
    rows, notes = [], []
    for e in report.experiments:
        revenue = e.primary
        rows.append((
            experiment_name(e), f"{e.conversion.treated_n:,}", f"{e.conversion.control_n:,}",
            f"{percent(e.conversion.treated_mean, 2)} vs {percent(e.conversion.control_mean, 2)}",
            f"{points(e.conversion.difference)} {interval(e.conversion.ci_low, e.conversion.ci_high, lambda v: f'{v * 100:+.2f}')}",
            p_value(e.conversion.verdict_p_value),
            f"{money(e.revenue.treated_mean)} vs {money(e.revenue.control_mean)}",
            f"{revenue.difference:+,.1f} {interval(revenue.ci_low, revenue.ci_high, lambda v: f'{v:+,.1f}')}",
            p_value(revenue.verdict_p_value),
            f"{percent(e.revenue.relative_lift, 0, True)} {interval(e.revenue.lift_ci_low, e.revenue.lift_ci_high, lambda v: percent(v, 0, True))}",
            f"{money(e.incremental_revenue)} {interval(e.incremental_revenue_low, e.incremental_revenue_high, money)}",
            "too early: no window has passed" if e.window_complete == 0 else
            verdict(e.primary) + (f" (conversion: {verdict(e.conversion)})" if e.conversion.significant else ""),
            _detectable(e),
        ))
        if e.sample_ratio is not None and e.sample_ratio.mismatch:
            notes.append(f"{experiment_name(e)}: SAMPLE RATIO MISMATCH (p = {p_value(e.sample_ratio.p_value)}): "
                         f"{e.sample_ratio.treated:,} treated / {e.sample_ratio.control:,} {e.comparison_group} against a configured "
                         f"{percent(1 - e.sample_ratio.expected_treated_share, 0)} {e.comparison_group}; assignment is broken, do not trust this comparison")
        if e.comparison_group == "holdout":
            notes.append(f"{experiment_name(e)}: no control group; compared with the global holdout")
    unfinished = [f"{experiment_name(e)} {percent(e.window_complete, 0)}" for e in report.experiments if e.window_complete < 1]
    if unfinished:
        notes.append("the attribution window has fully passed only for this share of customers, so numbers will still grow: "
                     + ", ".join(unfinished))
    if any(e.revenue_cuped for e in report.experiments):
        notes.append(f"revenue intervals are CUPED-adjusted with each customer's spend in the {report.pre_period_days:g} days before entry")
    if report.experiments:
        notes.append(_tests_note(report.experiments))
    headers = ("campaign / arm", "treated", "control", "conversion", "difference [95% CI]", "p (Holm)",
               f"revenue / customer, {cur}", "difference [95% CI]", "p (Holm)", "lift [95% CI]", f"incremental revenue, {cur} [95% CI]",
               "verdict", "detectable (80% power)")
    return Section("Incrementality: treated against control, per assigned customer", headers, tuple(rows), tuple(notes))


def _tests_note(experiments: tuple[Experiment, ...]) -> str:
    tests = sum(1 for e in experiments for c in (e.primary, e.conversion) if c.p_adjusted is not None)
    return (f"p (Holm): p-values adjusted by Holm over the {tests} tests of this report (revenue and conversion of every row); "
            "the verdicts use them, the 95% intervals are per comparison, so an interval can exclude 0 with no significant "
            "difference; revenue is tested by permutation while the smaller group has fewer than "
            f"{PERMUTATION_BELOW:,} customers, by Welch's t above; conversion by the two-proportion z-test, "
            f"by Fisher's exact test when a cell expects fewer than {MIN_EXPECTED_CELL} customers")


def _detectable(e: Experiment) -> str:
    conv, rev = e.detectable_conversion, e.detectable_revenue
    parts = []
    if conv.absolute is not None:
        parts.append(f"{conv.absolute * 100:.2f} pt ({percent(conv.relative, 0)})")
    if rev.absolute is not None:
        parts.append(f"{rev.absolute:,.1f}/customer ({percent(rev.relative, 0)})")
    return ", ".join(parts) or "–"


def _funnel(report: Report, cur: str) -> Section:
    rows = tuple(
        (r.campaign, r.arm or "–", "–" if r.step is None else str(r.step + 1), r.channel or "–", f"{r.audience:,}", f"{r.control:,}",
         f"{r.sent:,}", f"{r.delivered:,}", f"{r.opened:,}", f"{r.clicked:,}", f"{r.unsubscribed:,}", f"{r.converted:,}",
         money(r.revenue), money(r.cost))
        for r in report.funnel
    )
    headers = ("campaign", "arm", "step", "channel", "audience", "control", "sent", "delivered", "opened", "clicked", "unsubscribed",
               "converted", f"revenue, {cur}", f"cost, {cur}")
    notes = (f"converted and revenue here are last-touch: an order within {report.window_days:g} days of entry, credited to the "
             "latest message before it; incrementality above is the number to judge a campaign by",) if rows else ()
    return Section("Funnel per campaign, arm, cascade step and channel", headers, rows, notes, numeric_from=4)


def _economics(report: Report, cur: str) -> Section:
    rows = tuple(
        (e.campaign, f"{e.sent:,}", money(e.message_cost), "–" if e.offer_cost is None else money(e.offer_cost), money(e.revenue),
         money(e.incremental_revenue), percent(e.drr), percent(e.drr_incremental),
         "no forecast recorded" if e.drr_forecast is None else percent(e.drr_forecast),
         e.most_expensive_channel or "–", money(e.cost_on_most_expensive), money(e.cascade_savings))
        for e in report.economics
    )
    headers = ("campaign", "sent", f"message cost, {cur}", f"offer cost, {cur}", f"revenue, {cur}", f"incremental, {cur}",
               "DRR", "DRR on incremental", "DRR forecast", "dearest channel", f"all on it, {cur}", f"cascade saved, {cur}")
    return Section("Economics: DRR = cost / revenue, forecast against actual", headers, rows, ())


def _holdout(report: Report, cur: str) -> Section:
    h = report.holdout
    c = h.revenue_per_customer
    rows = [("customers", f"{h.customers:,}"), ("in the global holdout", f"{h.holdout_customers:,} ({percent(h.holdout_share, 0)} configured)"),
            (f"revenue in the period, {cur}", money(h.revenue))]
    if c is not None:
        rows += [
            (f"revenue / customer, reached vs holdout, {cur}", f"{c.treated_mean:,.1f} vs {c.control_mean:,.1f}"),
            (f"difference [95% CI], {cur}", f"{c.difference:+,.2f} {interval(c.ci_low, c.ci_high, lambda v: f'{v:+,.2f}')}  p {p_value(c.p_value)}"),
            (f"incremental revenue of CRM [95% CI], {cur}",
             f"{money(h.incremental_revenue)} {interval(h.incremental_revenue_low, h.incremental_revenue_high, money)}"),
            ("CRM share of revenue (incremental)", percent(h.crm_share)),
        ]
    rows += [(f"last-touch attributed revenue, {cur}", money(h.attributed_revenue)), ("CRM share of revenue (last touch)", percent(h.attributed_share))]
    return Section("Global holdout: everyone reached against those who get nothing", ("", ""), tuple(rows), (), numeric_from=1)


def _analytics(report: Report, cur: str) -> list[Section]:
    a = report.analytics
    found = []
    if a.rfm_groups:
        rows = tuple((g, *[f"{n:,}" for n in row], f"{sum(row):,}") for g, row in zip(a.rfm_groups, a.rfm_matrix))
        found.append(Section(f"RFM migration ({a.rfm_feature}): rows on {a.rfm_from}, columns on {a.rfm_to}",
                             ("from \\ to", *a.rfm_groups, "total"), rows))
        found.append(Section("ARPU and LTV per RFM group", ("group", "customers", f"ARPU in the period, {cur}", f"LTV to date, {cur}"),
                             tuple((s.segment, f"{s.customers:,}", f"{s.arpu:,.1f}", f"{s.ltv:,.0f}") for s in a.segments)))
    if a.cohorts:
        width = max(len(c.retention) for c in a.cohorts)
        rows = tuple((c.month, f"{c.customers:,}", *[percent(v, 0) for v in c.retention], *[""] * (width - len(c.retention)))
                     for c in a.cohorts)
        found.append(Section("Cohort retention by month of first purchase (share buying in month N)",
                             ("cohort", "customers", *[f"M{i}" for i in range(width)]), rows))
    if a.mix:
        channels = sorted({m.channel for m in a.mix})
        table = {(m.weekday, m.channel): m for m in a.mix}
        total = sum(m.orders for m in a.mix) or 1
        rows = tuple((WEEKDAYS[d], *[f"{table[(d, ch)].orders:,}" if (d, ch) in table else "0" for ch in channels],
                      percent(sum(table[(d, ch)].orders for ch in channels if (d, ch) in table) / total, 1)) for d in range(7))
        found.append(Section("Purchases by weekday and channel (orders)", ("weekday", *channels, "share"), rows))
    return found


def _header(report: Report) -> list[str]:
    since = report.start.date().isoformat() if report.start else "the start"
    return [
        f"campaignctl report for {report.project} as of {report.now.isoformat(timespec='minutes')}",
        f"Enrollments from {since} to {report.end.date()}; a conversion is a completed order within {report.window_days:g} days after entry.",
    ]


def render_text(report: Report) -> str:
    out = _header(report)
    for section in sections(report):
        out += ["", section.title + ":"]
        if section.rows:
            out += ["  " + line for line in _aligned(section)]
        out += [f"  * {note}" for note in section.notes]
    out += ["", *[f"Note: {note}" for note in report.notes]] if report.notes else []
    return "\n".join(out) + "\n"


def _aligned(section: Section) -> list[str]:
    if section.headers == ("", ""):  # key/value lists read better without a header
        width = max(len(k) for k, _ in section.rows)
        return [f"{k:<{width}}  {v}" for k, v in section.rows]
    table = [section.headers, *section.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(section.headers))]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(w) if i >= section.numeric_from and row is not section.headers else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [line(row) for row in table]


def render_markdown(report: Report) -> str:
    out = [f"### {_header(report)[0]}", "", _header(report)[1]]
    for section in sections(report):
        out += ["", f"#### {section.title}", ""]
        if section.rows:
            out.append("| " + " | ".join(h or " " for h in section.headers) + " |")
            out.append("|" + "|".join("---:" if i >= section.numeric_from else "---" for i in range(len(section.headers))) + "|")
            out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in section.rows]
        out += ["", *[f"- {note}" for note in section.notes]] if section.notes else []
    out += ["", *[f"> {note}" for note in report.notes]] if report.notes else []
    return "\n".join(out) + "\n"


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str)

