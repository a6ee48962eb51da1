"""campaignctl segment ...: look at segments against the project's data."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import click
from rich.markup import escape
from rich.table import Table

from ..diagnostics import ProjectError
from .output import (
    console,
    emit_json,
    fail,
    format_option,
    load_project_or_exit,
    now_option,
    open_source_or_exit,
    parse_now,
    print_diagnostics,
)


@click.group("segment")
def segment_group() -> None:
    """List, size, show and explain segments, and print their SQL."""


def _known(project, name: str) -> None:
    if name not in project.segments:
        fail(f"no segment named {name!r}; defined: {', '.join(sorted(project.segments)) or 'none'}")


@contextmanager
def _running(project, what: str) -> Iterator:
    """The data source, open, with a spinner on stderr while the query runs."""
    source = open_source_or_exit(project)
    try:
        with console(stderr=True).status(f"{what} …", spinner="dots"):
            yield source
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except Exception as exc:  # a query error names the source; the exit code stays 1
        fail(f"data source {project.data_source.plugin!r}: {exc}")
    finally:
        source.close()


@segment_group.command("list")
@format_option
@click.pass_context
def list_command(ctx: click.Context, output_format: str) -> None:
    """The project's segments with their descriptions and files."""
    project = load_project_or_exit(ctx)
    rows = [{"name": s.name, "description": s.description, "location": str(s.location)} for s in project.segments.values()]
    if output_format == "json":
        emit_json({"segments": rows})
        return
    table = Table("segment", "description", "defined at")
    for row in rows:
        table.add_row(row["name"], escape(row["description"]), row["location"])
    console().print(table)


@segment_group.command("size")
@click.argument("names", nargs=-1)
@format_option
@now_option
@click.pass_context
def size_command(ctx: click.Context, names: tuple[str, ...], output_format: str, now_text: str | None) -> None:
    """How many customers are in each segment (default: all of them), in one query."""
    from ..segments import evaluate_segments

    project, now = load_project_or_exit(ctx), parse_now(now_text)
    for name in names:
        _known(project, name)
    with _running(project, "evaluating segments") as source:
        audiences = evaluate_segments(project, source, list(names) or None, now=now)
    sizes = {name: audiences.size(name) for name in audiences.members}
    if output_format == "json":
        emit_json({"now": now.isoformat(), "customers": audiences.customers, "seconds": round(audiences.elapsed, 3), "sizes": sizes})
        return
    table = Table("segment", "customers", "share")
    for name, size in sizes.items():
        table.add_row(name, f"{size:,}", f"{size / audiences.customers:.1%}" if audiences.customers else "-")
    console().print(table)
    console().print(f"{audiences.customers:,} customers evaluated in {audiences.elapsed:.2f}s")


@segment_group.command("show")
@click.argument("name")
@click.option("--limit", default=10, show_default=True, help="How many sample members to show.")
@format_option
@now_option
@click.pass_context
def show_command(ctx: click.Context, name: str, limit: int, output_format: str, now_text: str | None) -> None:
    """A segment's definition, size, and sample members with the values that put them in."""
    from ..segments import evaluate_segments, sample_members

    project, now = load_project_or_exit(ctx), parse_now(now_text)
    _known(project, name)
    segment = project.segments[name]
    with _running(project, f"evaluating {name}") as source:
        size = evaluate_segments(project, source, [name], now=now).size(name)
        sample = sample_members(project, source, name, now=now, limit=limit)
    if output_format == "json":
        emit_json({"segment": name, "location": str(segment.location), "definition": _plain(segment.spec), "size": size, "now": now.isoformat(),
                   "sample": sample.to_pylist()})
        return
    out = console()
    out.print(f"[bold]{name}[/] ({segment.location}) {escape(segment.description)}")
    out.print(_yaml(segment.spec["where"]))
    out.print(f"[bold]{size:,}[/] customers")
    table = Table(*(escape(column) for column in sample.column_names))
    for row in sample.to_pylist():
        table.add_row(*("" if value is None else escape(str(value)) for value in row.values()))
    out.print(table)


@segment_group.command("sql")
@click.argument("name")
@click.option("--dialect", type=click.Choice(["duckdb", "postgres", "spark"]), default=None,
              help="SQL dialect (default: the project's data source's).")
@format_option
@now_option
@click.pass_context
def sql_command(ctx: click.Context, name: str, dialect: str | None, output_format: str, now_text: str | None) -> None:
    """The SQL that computes a segment (with the segments and features it uses)."""
    from ..segments import compile_segments

    project, now = load_project_or_exit(ctx), parse_now(now_text)
    _known(project, name)
    # Built-in sources are named after their dialect; others print DuckDB's unless asked.
    dialect = dialect or (project.data_source.plugin if project.data_source.plugin in ("postgres", "spark") else "duckdb")
    compiled = compile_segments(project, [name], now=now, dialect=dialect)
    if output_format == "json":
        emit_json({"segment": name, "dialect": dialect, "now": now.isoformat(), "sql": compiled.sql,
                   "segments": list(compiled.segments), "features": list(compiled.features)})
    else:
        click.echo(compiled.sql)


@segment_group.command("explain")
@click.argument("name")
@format_option
@now_option
@click.pass_context
def explain_command(ctx: click.Context, name: str, output_format: str, now_text: str | None) -> None:
    """A segment's condition tree in words, with how many customers meet each part."""
    from ..segments import explain_segment

    project, now = load_project_or_exit(ctx), parse_now(now_text)
    _known(project, name)
    with _running(project, f"explaining {name}") as source:
        explanation = explain_segment(project, source, name, now=now)
    if output_format == "json":
        emit_json({"segment": name, "now": now.isoformat(), "customers": explanation.customers, "members": explanation.members,
                   "conditions": [{"depth": c.depth, "condition": c.text, "customers": c.members} for c in explanation.conditions]})
        return
    table = Table("condition", "customers", "share")
    for condition in explanation.conditions:
        share = f"{condition.members / explanation.customers:.1%}" if explanation.customers else "-"
        table.add_row("  " * condition.depth + escape(condition.text), f"{condition.members:,}", share)
    out = console()
    out.print(table)
    out.print(f"[bold]{name}[/]: {explanation.members:,} of {explanation.customers:,} customers")


def _plain(value):
    """Located YAML mappings as plain JSON values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _yaml(value) -> str:
    import yaml

    return escape(yaml.safe_dump(_plain(value), sort_keys=False, allow_unicode=True).rstrip())
