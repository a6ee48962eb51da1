"""Output for people (rich, colour unless NO_COLOR or not a terminal) and for
machines (plain JSON with a format_version, documented in docs/cli.md)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

import click
from rich.console import Console

from ..diagnostics import Diagnostic

JSON_FORMAT_VERSION = 1

format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for machines (stable, see docs/cli.md).",
)


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=True)


def emit_json(payload: dict[str, Any]) -> None:
    click.echo(json.dumps({"format_version": JSON_FORMAT_VERSION, **payload}, indent=2, ensure_ascii=False, default=str))


def print_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    """One line per problem on stderr: file:line:col: subject: message (hint)."""
    err = console(stderr=True)
    for diagnostic in diagnostics:
        style = "red" if diagnostic.severity == "error" else "yellow"
        err.print(f"[bold]{diagnostic.location}[/]: [{style}]{diagnostic.severity}[/]: {_escape(diagnostic.subject)}: {_escape(diagnostic.message)}" + (f" [dim]({_escape(diagnostic.hint)})[/]" if diagnostic.hint else ""))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def project_dir(ctx: click.Context) -> str:
    return ctx.find_root().params.get("project") or "."


def fail(message: str, code: int = 1) -> None:
    console(stderr=True).print(f"[red]error[/]: {_escape(message)}")
    sys.exit(code)


now_option = click.option(
    "--now",
    "now_text",
    metavar="TIMESTAMP",
    help="The moment to act as of (ISO 8601; naive means UTC; default: the current time). Pin it in CI so results do not drift.",
)


def parse_now(text: str | None):
    from datetime import datetime, timezone

    if not text:
        return datetime.now(timezone.utc)
    try:
        now = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 timestamp (2026-12-01T10:00:00+03:00)", param_hint="--now") from None
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def load_project_or_exit(ctx: click.Context):
    """The validated project, or its diagnostics on stderr and exit 1."""
    from ..diagnostics import ProjectError
    from ..plugins import PluginError
    from ..project import load_project

    try:
        return load_project(project_dir(ctx))
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except PluginError as exc:
        fail(str(exc))


def open_source_or_exit(project, *, check: bool = False):
    """The project's data source (secrets resolved now), or the reasons and exit 1."""
    from ..connect import open_data_source
    from ..diagnostics import ProjectError

    try:
        return open_data_source(project, check=check)
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
