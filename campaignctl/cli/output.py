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
