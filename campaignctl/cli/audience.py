"""campaignctl audience ...: audiences for other systems (ad-network retargeting)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .output import console, emit_json, fail, load_project_or_exit, now_option, parse_now, print_diagnostics


@click.group("audience")
def audience_group() -> None:
    """Export audiences for ad-network retargeting (hashed, never raw contacts)."""


@audience_group.command("export")
@click.argument("segment", required=False)
@click.option("--unreachable", is_flag=True, help="Every customer no channel can reach (no consent, no contact or unsubscribed), instead of a segment.")
@click.option("--format", "file_format", type=click.Choice(["google", "meta", "hashes"]), default="google", show_default=True,
              help="google: Customer Match CSV (Email,Phone); meta: custom audience CSV (email,phone); hashes: one SHA-256 per line.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The file to write (mode 0600).")
@click.option("--report", "report_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="The summary on stdout: text for people, json for machines.")
@now_option
@click.pass_context
def export_command(ctx: click.Context, segment: str | None, unreachable: bool, file_format: str, out: Path, report_format: str,
                   now_text: str | None) -> None:
    """Write SEGMENT's members (or --unreachable customers) as SHA-256 hashes of
    normalised e-mail and phone, in a file an ad network takes."""
    from ..diagnostics import ProjectError
    from ..retargeting import ExportError, export_audience

    if bool(segment) == unreachable:
        fail("give either a SEGMENT or --unreachable (e.g. `campaignctl audience export no_contact_retargeting --out ads.csv`)")
    project, now = load_project_or_exit(ctx), parse_now(now_text)
    try:
        result = export_audience(project, out, segment=segment, file_format=file_format, now=now)
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except (ExportError, OSError) as exc:
        fail(str(exc))
    if report_format == "json":
        emit_json(result.to_dict())
        return
    console().print(
        f"{result.exported:,} of {result.customers:,} customers in {result.audience} written to {result.path} ({result.format}): "
        f"{result.emails:,} e-mail and {result.phones:,} phone hashes"
        + (f"; {result.phones_skipped:,} phones without a country code skipped" if result.phones_skipped else "")
    )
