"""campaignctl offer ...: offer economics against the project's data."""

from __future__ import annotations

import sys

import click

from .output import console, emit_json, fail, load_project_or_exit, now_option, open_source_or_exit, parse_now, print_diagnostics


@click.group("offer")
def offer_group() -> None:
    """Offer economics: bands of a customer feature with thresholds and amounts that meet a DRR target."""


@offer_group.command("bands")
@click.argument("feature")
@click.option("--target-drr", type=float, required=True, help="The DRR the offers must meet, as a share (0.15 is 15%).")
@click.option("--stretch", type=float, default=1.25, show_default=True, help="Threshold = the band's average check x this, rounded up.")
@click.option("--valid-days", type=click.IntRange(1, 365), default=14, show_default=True,
              help="How long the offers are valid; conversion is counted in windows this long.")
@click.option("--lookback-days", type=click.IntRange(1, 3650), default=365, show_default=True, help="Order history read per band.")
@click.option("--format", "output_format", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True,
              help="text: a table; json: the proposal (docs/cli.md); yaml: an offers document that validates.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), help="Write the offers YAML document here as well.")
@now_option
@click.pass_context
def bands_command(ctx: click.Context, feature: str, target_drr: float, stretch: float, valid_days: int, lookback_days: int,
                  output_format: str, out_path: str | None, now_text: str | None) -> None:
    """Per quantile band of FEATURE (e.g. avg_check_band): the threshold and the
    amount of a fixed discount that meet --target-drr, forecast from the band's history."""
    from datetime import timedelta

    from ..diagnostics import ProjectError
    from ..offers.bands import BandsError, band_range, offer_name, offers_document, propose_bands

    project, now = load_project_or_exit(ctx), parse_now(now_text)
    source = open_source_or_exit(project)
    try:
        with console(stderr=True).status("reading the bands' history …", spinner="dots"):
            proposal = propose_bands(project, source, feature, now, target_drr, stretch=stretch, valid_days=valid_days,
                                     lookback=timedelta(days=lookback_days))
    except BandsError as exc:
        fail(str(exc))
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    finally:
        source.close()
    document = offers_document(proposal, project.currency)
    if out_path:
        _write_yaml(out_path, document)
    if output_format == "json":
        emit_json(proposal.to_dict())
    elif output_format == "yaml":
        click.echo(_yaml_text(document), nl=False)
    else:
        _print_table(proposal, band_range, offer_name, project.currency)
        if out_path:
            console().print(f"offers written to {out_path}")


def _yaml_text(document: dict) -> str:
    import yaml

    header = "# yaml-language-server: $schema=https://campaignctl.dev/schemas/v1/document.json\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


def _write_yaml(path: str, document: dict) -> None:
    from pathlib import Path

    try:
        Path(path).write_text(_yaml_text(document), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")


def _print_table(proposal, band_range, offer_name, currency: str) -> None:
    # Plain fixed-width lines, like plan: a table that never wraps in CI logs.
    header = ("band", "range", "customers", "avg check", "conversion", "offer", "DRR", "revenue", "cost", "offer name")
    rows = []
    for index, band in enumerate(proposal.bands):
        rows.append((band.band, band_range(proposal, index), f"{band.customers:,}", f"{band.average_check:,.2f}", f"{band.conversion:.2%}",
                     f"{band.amount:,} off from {band.threshold:,}" if band.amount else "—",
                     f"{band.drr:.1%}" if band.drr is not None else "—", f"{band.revenue:,.2f}", f"{band.cost:,.2f}",
                     offer_name(proposal.feature, band)))
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 5, 9}
    lines = [f"{proposal.feature}: offers for a DRR of {proposal.target_drr:.0%} "
             f"({proposal.valid_days}-day offers, {proposal.lookback_days} days of history; amounts in {currency})"]
    for cells in [header, *rows]:
        lines.append("  " + "  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))).rstrip())
    lines += ["", "As offers:"]
    lines += [f"  {band_range(proposal, i)}: {band.amount:,} off from {band.threshold:,} ({band.drr:.0%})"
              for i, band in enumerate(proposal.bands) if band.amount and band.drr is not None]
    lines.append("DRR without messages: plan adds them, so leave room under the policy limit.")
    click.echo("\n".join(lines))
