"""The report as one self-contained HTML page: inline CSS and SVG charts drawn
here, no script, no font or image fetched (a Content-Security-Policy forbids
any network use), so it opens from an e-mail attachment or a CI artifact."""

from __future__ import annotations

import math
from html import escape

from .model import Report
from .render import WEEKDAYS, Section, experiment_name, percent, sections

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;margin:0;background:#f5f7fa}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#52606d;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08);min-width:180px}
.card b{display:block;font-size:20px}.card span{color:#52606d;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
figure{background:#fff;border-radius:8px;margin:0;padding:12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
figcaption{font-weight:600;margin-bottom:6px}
.scroll{overflow-x:auto;background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:5px 8px;border-bottom:1px solid #e4e7eb;white-space:nowrap}
th{background:#f0f4f8;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
ul.notes{color:#52606d;font-size:12.5px;margin:6px 0 0;padding-left:18px}
svg text{font:11px system-ui,sans-serif;fill:#323f4b}
"""
BLUE, GREEN, RED, GREY = "#2f6fde", "#1f9d55", "#d64545", "#9aa5b1"


def render_html(report: Report) -> str:
    since = report.start.date().isoformat() if report.start else "the start"
    body = [
        f"<h1>campaignctl report: {escape(report.project)}</h1>",
        f"<p class=sub>As of {escape(report.now.isoformat(timespec='minutes'))}; enrollments from {since} to {report.end.date()}; "
        f"a conversion is a completed order within {report.window_days:g} days after entry.</p>",
        _cards(report),
        "<h2>Charts</h2><div class=charts>",
        _figure("Funnel, all campaigns", funnel_chart(report)),
        _figure("Conversion uplift against control, points, with 95% interval", uplift_chart(report)),
        _figure("DRR: forecast against actual", drr_chart(report)),
    ]
    if report.analytics and report.analytics.rfm_groups:
        body.append(_figure(f"RFM migration, {report.analytics.rfm_from} → {report.analytics.rfm_to}", rfm_chart(report)))
    if report.analytics and report.analytics.cohorts:
        body.append(_figure("Cohort retention by month of first purchase", cohort_chart(report)))
    if report.analytics and report.analytics.mix:
        body.append(_figure("Orders by weekday and channel", mix_chart(report)))
    body.append("</div>")
    body += [_section(s) for s in sections(report)]
    if report.notes:
        body.append("<ul class=notes>" + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul>")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        "<meta name=viewport content=\"width=device-width,initial-scale=1\">"
        f"<title>campaignctl report: {escape(report.project)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _cards(report: Report) -> str:
    cards = []
    h = report.holdout
    if h is not None and h.incremental_revenue is not None:
        cards.append((f"{h.incremental_revenue:,.0f} {report.currency}", "incremental revenue of CRM (global holdout)"))
        cards.append((percent(h.crm_share), "CRM share of revenue (incremental)"))
    overall = [e for e in report.experiments if e.arm is None]
    if overall:
        cards.append((f"{sum(e.incremental_revenue for e in overall):,.0f} {report.currency}", "incremental revenue, campaigns vs control"))
        cards.append((f"{sum(1 for e in overall if e.primary.significant_uplift)}"
                      f" of {len(overall)}", "campaigns with a significant uplift"))
    sent = sum(e.sent for e in report.economics)
    if sent:
        cards.append((f"{sent:,}", "messages sent"))
        cards.append((f"{sum(e.cascade_savings for e in report.economics):,.0f} {report.currency}", "saved by cascades"))
    return "<div class=cards>" + "".join(f"<div class=card><b>{escape(v)}</b><span>{escape(k)}</span></div>" for v, k in cards) + "</div>"


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>"


def _section(section: Section) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i >= section.numeric_from else ''}>{escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in section.rows)
    table = ""
    if section.rows:
        head = "".join(f"<th>{escape(h)}</th>" for h in section.headers)
        table = f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    notes = "<ul class=notes>" + "".join(f"<li>{escape(n)}</li>" for n in section.notes) + "</ul>" if section.notes else ""
    return f"<h2>{escape(section.title)}</h2>{table}{notes}"


def _svg(width: int, height: int, content: list[str], label: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='{width}' "
            "style='max-width:100%;height:auto' role=img "
            f"aria-label='{escape(label)}'>{''.join(content)}</svg>")


def _empty(text: str) -> str:
    return _svg(500, 60, [f"<text x='10' y='35'>{escape(text)}</text>"], text)


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {extra}>{escape(text)}</text>"


def funnel_chart(report: Report) -> str:
    audiences = {(r.campaign, r.arm): r.audience for r in report.funnel}  # repeated on each row of an arm
    stages = [("audience", sum(audiences.values()))]
    for name in ("sent", "delivered", "opened", "clicked", "converted"):
        stages.append((name, sum(getattr(r, name) for r in report.funnel)))
    top = max((n for _, n in stages), default=0)
    if not top:
        return _empty("no enrollments in this period")
    parts, bar_x, width = [], 90, 380
    for i, (name, n) in enumerate(stages):
        y = 10 + i * 30
        w = width * n / top
        parts.append(f"<rect x='{bar_x}' y='{y}' width='{w:.1f}' height='22' rx='3' fill='{BLUE}'><title>{name}: {n:,}</title></rect>")
        parts += [_text(bar_x - 6, y + 15, name, "end"), _text(bar_x + w + 6, y + 15, f"{n:,}")]
    return _svg(540, 10 + len(stages) * 30, parts, "funnel")


def uplift_chart(report: Report) -> str:
    rows = [e for e in report.experiments if not math.isnan(e.conversion.ci_low)]
    if not rows:
        return _empty("no campaign has both treated and control customers yet")
    low = min(min(e.conversion.ci_low for e in rows), 0)
    high = max(max(e.conversion.ci_high for e in rows), 0)
    pad = (high - low) * 0.1 or 0.01
    low, high = low - pad, high + pad
    left, width, row_h = 170, 330, 24

    def x(v: float) -> float:
        return left + width * (v - low) / (high - low)

    parts = [f"<line x1='{x(0):.1f}' x2='{x(0):.1f}' y1='4' y2='{10 + len(rows) * row_h}' stroke='{GREY}' stroke-dasharray='3 3'/>"]
    for i, e in enumerate(rows):
        c = e.conversion
        y = 16 + i * row_h
        color = GREEN if c.significant and c.difference > 0 else RED if c.significant else GREY
        tip = f"{experiment_name(e)}: {c.difference * 100:+.2f} pt [{c.ci_low * 100:+.2f}, {c.ci_high * 100:+.2f}], p {c.verdict_p_value:.3g}" + (" (Holm)" if c.p_adjusted is not None else "")
        parts += [
            _text(left - 8, y + 4, experiment_name(e)[:26], "end"),
            f"<g><title>{escape(tip)}</title><line x1='{x(c.ci_low):.1f}' x2='{x(c.ci_high):.1f}' y1='{y}' y2='{y}' stroke='{color}' stroke-width='2'/>"
            f"<circle cx='{x(c.difference):.1f}' cy='{y}' r='4' fill='{color}'/></g>",
        ]
    axis_y = 14 + len(rows) * row_h
    parts += [_text(x(low), axis_y + 10, f"{low * 100:+.1f}", "start"), _text(x(0), axis_y + 10, "0", "middle"),
              _text(x(high), axis_y + 10, f"{high * 100:+.1f}", "end")]
    return _svg(520, axis_y + 16, parts, "uplift")


def drr_chart(report: Report) -> str:
    rows = [e for e in report.economics if e.drr is not None or e.drr_forecast is not None]
    if not rows:
        return _empty("no revenue or forecast to compare yet")
    top = max([v for e in rows for v in (e.drr, e.drr_forecast) if v is not None] + [0.01])
    left, width, row_h = 170, 300, 30
    parts = []
    for i, e in enumerate(rows):
        y = 8 + i * row_h
        parts.append(_text(left - 8, y + 14, e.campaign[:26], "end"))
        for j, (value, color, name) in enumerate(((e.drr_forecast, GREY, "forecast"), (e.drr, BLUE, "actual"))):
            if value is None:
                parts.append(_text(left + 4, y + 9 + j * 11, f"{name}: not recorded", extra="font-size='9'"))
                continue
            w = width * value / top
            parts.append(f"<rect x='{left}' y='{y + j * 11}' width='{w:.1f}' height='10' fill='{color}'><title>{name} {value * 100:.1f}%</title></rect>")
            parts.append(_text(left + w + 4, y + 9 + j * 11, f"{value * 100:.1f}%", extra="font-size='9'"))
    legend_y = 12 + len(rows) * row_h
    parts += [f"<rect x='{left}' y='{legend_y}' width='10' height='10' fill='{GREY}'/>", _text(left + 14, legend_y + 9, "forecast"),
              f"<rect x='{left + 80}' y='{legend_y}' width='10' height='10' fill='{BLUE}'/>", _text(left + 94, legend_y + 9, "actual")]
    return _svg(520, legend_y + 16, parts, "drr")


def _heat(value: float) -> str:
    """White to blue by ``value`` in [0, 1]."""
    value = max(0.0, min(1.0, value))
    r, g, b = (int(255 + (target - 255) * value) for target in (47, 111, 222))
    return f"rgb({r},{g},{b})"


def rfm_chart(report: Report) -> str:
    a = report.analytics
    n = len(a.rfm_groups)
    cell, left, top = 34, 120, 90
    peak = max((v for row in a.rfm_matrix for v in row), default=0) or 1
    parts = []
    for j, name in enumerate(a.rfm_groups):
        cx = left + j * cell + cell / 2
        parts.append(f"<text transform='translate({cx:.1f},{top - 6}) rotate(-50)'>{escape(name)}</text>")
    for i, (name, row) in enumerate(zip(a.rfm_groups, a.rfm_matrix)):
        y = top + i * cell
        parts.append(_text(left - 6, y + cell / 2 + 4, name, "end"))
        for j, v in enumerate(row):
            share = math.sqrt(v / peak)  # square root: the diagonal would wash out everything else
            parts.append(f"<rect x='{left + j * cell}' y='{y}' width='{cell - 2}' height='{cell - 2}' fill='{_heat(share)}'>"
                         f"<title>{escape(name)} → {escape(a.rfm_groups[j])}: {v:,}</title></rect>")
    return _svg(left + n * cell + 10, top + n * cell + 10, parts, "rfm migration")


def cohort_chart(report: Report) -> str:
    cohorts = report.analytics.cohorts
    width = max(len(c.retention) for c in cohorts)
    cell_w, cell_h, left, top = 34, 20, 70, 16
    parts = [_text(left + i * cell_w + cell_w / 2, top - 4, f"M{i}", "middle") for i in range(width)]
    later = [v for c in cohorts for v in c.retention[1:]]
    peak = max(later, default=0) or 1  # month 0 is 100% by definition; scale by the rest
    for r, c in enumerate(cohorts):
        y = top + r * cell_h
        parts.append(_text(left - 6, y + 14, c.month, "end"))
        for i, v in enumerate(c.retention):
            fill = _heat(1.0 if i == 0 else v / peak)
            parts.append(f"<rect x='{left + i * cell_w}' y='{y}' width='{cell_w - 2}' height='{cell_h - 2}' fill='{fill}'>"
                         f"<title>{c.month}, month {i}: {v * 100:.1f}% of {c.customers:,}</title></rect>")
            if i:
                parts.append(_text(left + i * cell_w + cell_w / 2 - 1, y + 13, f"{v * 100:.0f}", "middle", "font-size='9'"))
    return _svg(left + width * cell_w + 10, top + len(cohorts) * cell_h + 6, parts, "cohorts")


def mix_chart(report: Report) -> str:
    mix = report.analytics.mix
    channels = sorted({m.channel for m in mix})
    palette = [BLUE, GREEN, "#e8a33d", "#8e6ad8", RED]
    by_day = {d: {m.channel: m.orders for m in mix if m.weekday == d} for d in range(7)}
    top = max(sum(v.values()) for v in by_day.values()) or 1
    left, height, bar_w = 40, 160, 50
    parts = []
    for d in range(7):
        x, y = left + d * (bar_w + 14), 10 + height
        for k, channel in enumerate(channels):
            n = by_day[d].get(channel, 0)
            h = height * n / top
            y -= h
            parts.append(f"<rect x='{x}' y='{y:.1f}' width='{bar_w}' height='{h:.1f}' fill='{palette[k % len(palette)]}'>"
                         f"<title>{WEEKDAYS[d]} {escape(channel)}: {n:,}</title></rect>")
        parts.append(_text(x + bar_w / 2, 24 + height, WEEKDAYS[d], "middle"))
    for k, channel in enumerate(channels):
        parts += [f"<rect x='{left + k * 90}' y='{height + 34}' width='10' height='10' fill='{palette[k % len(palette)]}'/>",
                  _text(left + k * 90 + 14, height + 43, channel)]
    return _svg(left + 7 * (bar_w + 14) + 10, height + 52, parts, "weekday mix")
