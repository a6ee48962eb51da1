"""campaignctl serve: unsubscribe, click and open tracking, provider webhooks."""

from __future__ import annotations

import sys

import click

from ..diagnostics import ProjectError
from .output import fail, load_project_or_exit, print_diagnostics


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int) -> None:
    """Answer the links in sent messages: one-click unsubscribe (RFC 8058),
    click redirects, the open pixel and provider webhooks, recorded as outcomes
    in the state store. Put it behind an https reverse proxy at tracking.base_url
    (docs/tracking.md). Needs tracking.secret set in the environment."""
    from ..serve import serve
    from ..state import StateError

    project = load_project_or_exit(ctx)
    if project.tracking is None:
        fail("the project has no tracking section: add tracking: {base_url, secret} to campaignctl.yaml (docs/tracking.md)")
    try:
        serve(project, host, port)
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except StateError as exc:
        fail(str(exc))
