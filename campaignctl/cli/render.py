"""render: preview one campaign step for one customer (campaignctl.preview)."""

from __future__ import annotations

from pathlib import Path

import click

from .output import console, emit_json, fail, format_option, load_project_or_exit, now_option, parse_now


@click.command("render")
@click.argument("campaign")
@click.option("--customer", "customer_id", type=int, required=True, help="The customer_id to render for (from the data source).")
@click.option("--channel", help="The channel name, for a step that picks the cheapest channel (default: e-mail when it has one).")
@click.option("--step", type=click.IntRange(min=0), default=0, show_default=True, help="The cascade step, from 0.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the parts go (default: preview/CAMPAIGN-CUSTOMER).")
@click.option("--screenshot", is_flag=True, help="Also photograph the HTML with headless Chromium: desktop.png, mobile.png.")
@now_option
@format_option
@click.pass_context
def render_command(ctx: click.Context, campaign: str, customer_id: int, channel: str | None, step: int, out_dir: Path | None,
                   screenshot: bool, now_text: str | None, output_format: str) -> None:
    """Render CAMPAIGN's message for one customer into files (subject.txt,
    index.html, text.txt, amp.html ...) to review before it is sent."""
    from ..preview import PreviewError, render_preview

    project = load_project_or_exit(ctx)
    target = out_dir or Path("preview") / f"{campaign}-{customer_id}"
    try:
        preview = render_preview(project, campaign, customer_id, target, channel=channel, step=step, now=parse_now(now_text),
                                 screenshot=screenshot)
    except PreviewError as exc:
        fail(str(exc))
    if output_format == "json":
        emit_json(preview.to_dict())
        return
    out = console()
    out.print(f"{preview.campaign} step {preview.step} ({preview.channel}, template {preview.template}) for customer {preview.customer_id}:")
    for part, path in preview.files.items():
        out.print(f"  {part:<10} {path}")
    for name, path in preview.screenshots.items():
        out.print(f"  {name:<10} {path}")
