"""campaignctl data ...: commands about the customer data behind a project."""

from __future__ import annotations

import sys

import click

from .output import console, emit_json, fail, format_option, load_project_or_exit, now_option, open_source_or_exit, parse_now


@click.group("data")
def data_group() -> None:
    """Inspect the project's customer data."""


@data_group.command("check")
@format_option
@now_option
@click.pass_context
def check_command(ctx: click.Context, output_format: str, now_text: str | None) -> None:
    """Check the data source for data-quality problems: null or duplicate ids,
    values outside the data contract, future timestamps, orders of unknown
    customers, negative totals that are not returns. Exit 1 on any error."""
    from ..dataquality import check_data, has_errors
    now = parse_now(now_text)
    project = load_project_or_exit(ctx)
    source = open_source_or_exit(project)
    try:
        issues = check_data(project, source, now=now)
    except Exception as exc:  # a plugin's query error: say which source, keep the exit code contract
        fail(f"data source {project.data_source.plugin!r}: {exc}")
    finally:
        source.close()
    failed = has_errors(issues)
    if output_format == "json":
        emit_json({"ok": not failed, "now": now.isoformat(), "issues": [issue.to_json() for issue in issues]})
    else:
        _print_issues(issues)
    sys.exit(1 if failed else 0)


def _print_issues(issues) -> None:
    from rich.markup import escape

    out = console()
    for issue in issues:
        style = "red" if issue.severity == "error" else "yellow"
        where = escape(f"{issue.table}.{issue.column}" if issue.column else issue.table)
        examples = f" [dim](e.g. {escape(', '.join(issue.examples))})[/]" if issue.examples else ""
        count = f": {issue.count} row{'s' * (issue.count != 1)}" if issue.count else ""
        out.print(f"[{style}]{issue.severity}[/]: [bold]{where}[/]: {issue.message}{count}{examples}")
    errors = sum(issue.severity == "error" for issue in issues)
    if not issues:
        out.print("[green]✓[/] no data issues found.")
    else:
        out.print(f"{errors} error{'s' * (errors != 1)}, {len(issues) - errors} warning{'s' * (len(issues) - errors != 1)}.")
