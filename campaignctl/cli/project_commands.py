"""init, validate, plugins, schema export."""

from __future__ import annotations

import json
import shutil
import sys
from importlib import resources
from pathlib import Path

import click
from rich.table import Table

from ..plugins import PluginError, plugin_infos
from ..project import PROJECT_FILE, check_project
from ..schemas_registry import schema_files
from .output import console, emit_json, fail, format_option, print_diagnostics, project_dir


@click.command("validate")
@click.argument("directory", required=False, type=click.Path())
@format_option
@click.pass_context
def validate_command(ctx: click.Context, directory: str | None, output_format: str) -> None:
    """Check the project (DIRECTORY, default -C): YAML, schemas, references,
    templates, plugins. Exit 1 on errors."""
    directory = directory or project_dir(ctx)
    try:
        result = check_project(directory)
    except PluginError as exc:
        fail(str(exc))
    errors = [d for d in result.diagnostics if d.severity == "error"]
    counts = _counts(result.project)
    if output_format == "json":
        emit_json(
            {
                "valid": result.ok,
                "error_count": len(errors),
                "warning_count": len(result.diagnostics) - len(errors),
                "files": list(result.files),
                "definitions": counts,
                "diagnostics": [d.to_json() for d in result.diagnostics],
            }
        )
    else:
        print_diagnostics(result.diagnostics)
        out = console()
        if result.ok:
            summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            out.print(f"[green]✓[/] {directory} is valid: {summary or 'no definitions'} in {len(result.files)} files.")
        else:
            files = len({d.location.file for d in errors})
            out.print(f"[red]✗[/] {len(errors)} error{'s' * (len(errors) != 1)} in {files} file{'s' * (files != 1)}.")
    sys.exit(0 if result.ok else 1)


def _counts(project) -> dict[str, int]:
    kinds = ("campaigns", "segments", "features", "offers", "cascades", "templates", "channels")
    return {kind: len(getattr(project, kind)) if project else 0 for kind in kinds}


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Write into a directory that already holds files.")
def init_command(directory: str, force: bool) -> None:
    """Create a small working project in DIRECTORY."""
    target = Path(directory)
    if (target / PROJECT_FILE).exists():
        fail(f"{target / PROJECT_FILE} already exists; choose another directory")
    if target.exists() and any(target.iterdir()) and not force:
        fail(f"{target} is not empty; use --force to write into it anyway")
    scaffold = resources.files("campaignctl") / "scaffold"
    with resources.as_file(scaffold) as source:
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    out = console()
    out.print(f"[green]✓[/] created a project in {target}")
    out.print(f"  next: [bold]campaignctl -C {target} validate[/]")


@click.command("plugins")
@format_option
def plugins_command(output_format: str) -> None:
    """List loaded plugins, their versions and the hooks each implements."""
    try:
        infos = plugin_infos()
    except PluginError as exc:
        fail(str(exc))
    if output_format == "json":
        emit_json({"plugins": [{"name": i.name, "version": i.version, "distribution": i.distribution, "hooks": list(i.hooks)} for i in infos]})
        return
    table = Table("plugin", "version", "hooks", box=None)
    for info in infos:
        table.add_row(info.name, info.version or "-", ", ".join(info.hooks) or "-")
    console().print(table)


@click.group("schema")
def schema_group() -> None:
    """The JSON Schemas of the project format."""


@schema_group.command("export")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def schema_export(directory: str | None) -> None:
    """Write the schemas to DIRECTORY, or print them as one JSON object."""
    schemas = schema_files()
    if directory is None:
        click.echo(json.dumps(schemas, indent=2, ensure_ascii=False))
        return
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (target / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", "utf-8")
    console().print(f"[green]✓[/] wrote {len(schemas)} schemas to {target}")
