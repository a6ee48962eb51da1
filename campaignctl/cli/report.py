"""`campaignctl report`: incremental revenue against control groups, funnels,
DRR forecast against actual and CRM analytics (docs/report.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .output import console, fail, load_project_or_exit, now_option, parse_now, print_diagnostics

FORMATS = click.Choice(["text", "md", "json", "html"])


def _moment(text: str | None, option: str):
    if not text:
        return None
    try:
        return parse_now(text)
    except click.BadParameter:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 date or timestamp (2026-11-01 or 2026-11-01T10:00:00+03:00)",
                                 param_hint=option) from None


@click.command("report")
@click.argument("campaign", required=False)
@click.option("--from", "start_text", metavar="DATE", help="Count enrollments from this date (default: all); analytics from here (default: 30 days before --to).")
@click.option("--to", "end_text", metavar="DATE", help="... until this date (default: --now).")
@click.option("--window", "window_days", type=click.FloatRange(min=0, min_open=True), default=7, show_default=True,
              help="Attribution window: a conversion is an order within this many days after entry.")
@click.option("--assignments", type=click.Path(dir_okay=False, path_type=Path),
              help="Measure a campaign another system sent: CSV or Parquet with customer_id, group (control/treatment/arm), entered_at.")
@click.option("--control-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="With --assignments: the configured control share, for the sample-ratio check.")
@click.option("--bootstrap", is_flag=True, help="Revenue p-values and intervals by bootstrap instead of the permutation test (small groups) or Welch's t (large ones).")
@click.option("--no-analytics", is_flag=True, help="Skip the CRM analytics and the global-holdout view (faster).")
@click.option("--format", "output_format", type=FORMATS, default="text", show_default=True,
              help="text for people, md for a wiki or pull request, json for machines, html for the dashboard page.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the report to this file instead of stdout.")
@now_option
@click.pass_context
def report_command(ctx: click.Context, campaign: str | None, start_text: str | None, end_text: str | None, window_days: float,
                   assignments: Path | None, control_share: float | None, bootstrap: bool, no_analytics: bool, output_format: str,
                   out_file: Path | None, now_text: str | None) -> None:
    """What campaigns did, per campaign, arm, cascade step and channel, and
    what they added against their control groups, with 95% intervals."""
    from datetime import timedelta

    from ..diagnostics import ProjectError
    from ..report import ReportInputError, ReportOptions, render_html, render_json, render_markdown, render_text, report
    from ..state import StateError

    project = load_project_or_exit(ctx)
    options = ReportOptions(
        campaign=campaign, start=_moment(start_text, "--from"), end=_moment(end_text, "--to"), window=timedelta(days=window_days),
        assignments=assignments, experiment=campaign if assignments else None, control_share=control_share,
        bootstrap=bootstrap, analytics=not no_analytics,
    )
    try:
        result = report(project, parse_now(now_text), options)
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except (ReportInputError, StateError) as exc:
        fail(str(exc))
    rendered = {"text": render_text, "md": render_markdown, "json": render_json, "html": render_html}[output_format](result)
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(rendered, "utf-8")
        console(stderr=True).print(f"report written to {out_file}")
    else:
        click.echo(rendered, nl=False)
