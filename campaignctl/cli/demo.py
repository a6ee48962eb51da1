"""`campaignctl demo-data`: write the demo retailer's tables as Parquet."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .output import emit_json, format_option, project_dir

if TYPE_CHECKING:
    from ..demo_data import DemoSummary


def _parse_as_of(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO timestamp, e.g. 2026-12-01T10:00:00+03:00") from None


def _default_out_dir(ctx: click.Context) -> Path:
    """The `data` directory of the project chosen with the group's -C/--project."""
    return Path(project_dir(ctx)) / "data"


@click.command("demo-data")
@click.option("--customers", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Number of customers; about 20 orders each.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The same customers, seed and as-of give byte-identical files.")
@click.option("--as-of", "as_of", callback=_parse_as_of, metavar="TIMESTAMP",
              help="The moment the data describes (ISO; naive means UTC). Default: now, to the hour.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory. Default: the project's data directory.")
@format_option
@click.pass_context
def demo_data_command(ctx: click.Context, customers: int, seed: int, as_of: datetime | None,
                      out_dir: Path | None, output_format: str) -> None:
    """Write a realistic demo retailer (118 stores, ~20 orders per customer) as Parquet."""
    from ..demo_data import generate_demo_data  # numpy and pyarrow load only when generating

    out_dir = out_dir or _default_out_dir(ctx)
    # Progress goes to stderr so that --format json output stays clean, and
    # only to a terminal: logs of CI jobs get no bar redrawn a hundred times.
    stderr = Console(stderr=True)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=stderr,
                  transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("Generating customers", total=customers)

        def advance(stage: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            summary = generate_demo_data(out_dir, customers, seed=seed, as_of=as_of, progress=advance)
        except OSError as error:
            raise click.ClickException(f"cannot write to {out_dir}: {error}") from error
    if output_format == "json":
        emit_json(_as_json(summary, out_dir, seed))
    else:
        _print_summary(summary, out_dir)


def _as_json(summary: DemoSummary, out_dir: Path, seed: int) -> dict:
    return {"out": str(out_dir), "seed": seed, "as_of": summary.as_of.isoformat(), "rows": summary.rows()}


def _print_summary(summary: DemoSummary, out_dir: Path) -> None:
    table = Table("table", "rows")
    table.columns[1].justify = "right"
    for name, rows in summary.rows().items():
        table.add_row(name, f"{rows:,}")
    console = Console()
    console.print(f"Demo data written to {out_dir}, as of {summary.as_of.isoformat()}", highlight=False)
    console.print(table)
