"""campaignctl data ...: commands about the customer data behind a project."""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import datetime, timezone

import click

from ..diagnostics import ProjectError
from ..plugins import PluginError
from .output import console, emit_json, fail, format_option, print_diagnostics, project_dir


@click.group("data")
def data_group() -> None:
    """Inspect the project's customer data."""


@data_group.command("check")
@format_option
@click.option(
    "--now",
    "now_text",
    metavar="TIMESTAMP",
    help="The moment timestamps are checked against (ISO 8601; default: the current time). "
    "Pin it in CI so results do not drift.",
)
@click.pass_context
def check_command(ctx: click.Context, output_format: str, now_text: str | None) -> None:
    """Check the data source for data-quality problems: null or duplicate ids,
    values outside the data contract, future timestamps, orders of unknown
    customers, negative totals that are not returns. Exit 1 on any error."""
    from ..dataquality import check_data, has_errors
    from ..project import load_project

    now = _parse_now(now_text)
    try:
        project = load_project(project_dir(ctx))
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    source = _open_source(project)
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


def _parse_now(text: str | None) -> datetime:
    if not text:
        return datetime.now(timezone.utc)
    try:
        now = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 timestamp (2026-12-01T10:00:00+03:00)", param_hint="--now") from None
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def _open_source(project):
    """The project's data source, with ${env:...} secrets in its options resolved
    only now, when the command really connects."""
    from ..plugins import registry
    from ..secrets import resolve

    config = project.data_source
    options, diagnostics = resolve(config.options, os.environ, where=config.options)
    if diagnostics:
        print_diagnostics(diagnostics)
        sys.exit(1)
    try:
        factory = registry().data_sources.get(config.plugin)
    except PluginError as exc:
        fail(str(exc))
    if factory is None:
        fail(f"no data-source plugin named {config.plugin!r} is installed")
    try:
        return factory(dataclasses.replace(config, options=options), project.root)
    except Exception as exc:  # plugins keep secrets out of their messages (see campaignctl_postgres)
        fail(f"data source {config.plugin!r}: {exc}")


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
