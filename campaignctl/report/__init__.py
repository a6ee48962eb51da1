"""`campaignctl report`: what campaigns did, measured against control groups.

build_report reads state (who was assigned to what, what was sent and what
happened to it) and the orders in the data source, and returns a Report;
render_* turn it into text, Markdown, JSON or one self-contained HTML page.
docs/report.md explains every number.
"""

from .build import DEFAULT_PRE_PERIOD, DEFAULT_WINDOW, ReportOptions, build_report, report
from .collect import ReportInputError
from .html import render_html
from .model import Report
from .render import render_json, render_markdown, render_text

__all__ = [
    "DEFAULT_PRE_PERIOD", "DEFAULT_WINDOW", "Report", "ReportInputError", "ReportOptions", "build_report", "report",
    "render_html", "render_json", "render_markdown", "render_text",
]
