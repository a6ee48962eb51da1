"""plan, apply, force-unlock: the Terraform half of campaignctl."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..diagnostics import ProjectError
from .output import console, emit_json, fail, load_project_or_exit, now_option, parse_now, print_diagnostics

PLAN_FORMATS = click.Choice(["text", "md", "json"])


def _guarded(action):
    """Run a library call; its located problems go to stderr with exit 1."""
    from ..executor import StalePlan
    from ..issuing import OfferExportError, PoolExhausted
    from ..state import LockTimeout, StateError

    try:
        return action()
    except ProjectError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except (StalePlan, LockTimeout, StateError, OfferExportError, PoolExhausted) as exc:
        fail(str(exc))


def _warn_about_tracking(project) -> None:
    """Tracking configured but its secret unset: say (on stderr) that links stay placeholders."""
    from ..tracking import tracking_warnings

    print_diagnostics(tracking_warnings(project))


def _progress(enabled: bool):
    err = console(stderr=True)
    return (lambda text: err.print(f"[dim]… {text}[/]")) if enabled and err.is_terminal else None


@click.command("plan")
@click.option("--format", "output_format", type=PLAN_FORMATS, default="text", show_default=True,
              help="text for people, md for a pull-request comment, json for machines.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan for `apply PLAN`.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on errors or policy violations.")
@now_option
@click.pass_context
def plan_command(ctx: click.Context, output_format: str, out_file: Path | None, detailed_exitcode: bool, now_text: str | None) -> None:
    """Show what apply would do now: campaigns, enrollments, messages and cost,
    the 7-day forecast and every policy violation. Writes nothing."""
    from ..executor import make_plan
    from ..render import render_json, render_markdown, render_text

    project = load_project_or_exit(ctx)
    _warn_about_tracking(project)
    the_plan = _guarded(lambda: make_plan(project, parse_now(now_text), progress=_progress(True)))
    if out_file:
        out_file.write_text(the_plan.to_json(), "utf-8")
    renderer = {"text": render_text, "md": render_markdown, "json": render_json}[output_format]
    click.echo(renderer(the_plan))
    if the_plan.violations:
        sys.exit(1)
    sys.exit(the_plan.exit_code() if detailed_exitcode else 0)


@click.command("apply")
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds to wait for another apply to finish before giving up.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@now_option
@click.pass_context
def apply_command(ctx: click.Context, plan_file: Path | None, lock_timeout: float, output_format: str, now_text: str | None) -> None:
    """Send what is due, exactly once. With PLAN_FILE (from `plan --out`), apply
    that plan as approved, or refuse it when state or the project changed."""
    from ..executor import apply
    from ..planner import Plan

    project = load_project_or_exit(ctx)
    _warn_about_tracking(project)
    saved = Plan.from_json(plan_file.read_text("utf-8")) if plan_file else None
    now = saved.now if saved else parse_now(now_text)
    result = _guarded(lambda: apply(project, now, saved=saved, lock_timeout=lock_timeout, progress=_progress(True)))
    if output_format == "json":
        emit_json(result.to_dict())
    else:
        _print_apply(result)
    if not result.applied:
        sys.exit(1)
    delivery = result.delivery
    sys.exit(1 if delivery.get("in_doubt") or result.render_failures else 0)


def _print_apply(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..render import render_text

    out = console()
    if not result.applied:
        out.print(render_text(result.plan))
        out.print("[red]✗[/] not applied: the plan breaks a policy (see above). Nothing was written or sent.")
        return
    counts = result.delivery.get("counts", {})
    table = Table("channel", "sent", "already sent", "failed", "in doubt", box=None)
    for channel, c in sorted(counts.items()):
        failed = c.get("failed_temporary", 0) + c.get("failed_permanent", 0)
        table.add_row(channel, f"{c.get('sent', 0) + c.get('recovered', 0):,}", f"{c.get('already_sent', 0):,}", f"{failed:,}", f"{c.get('in_doubt', 0):,}")
    if counts:
        out.print(table)
    for key, error in result.render_failures[:10]:
        out.print(f"[yellow]not rendered[/] {escape(key)}: {escape(error)}")
    if len(result.render_failures) > 10:
        out.print(f"[yellow]… and {len(result.render_failures) - 10:,} more not rendered[/]")
    for key in result.delivery.get("in_doubt", [])[:10]:
        out.print(f"[red]in doubt[/] {escape(key)}: the provider may have it; not re-sent")
    if result.offers_issued or result.offers_exported:
        exported = ", ".join(f"{count:,} to {sink}" for sink, count in sorted(result.offers_exported.items())) or "no offer sinks"
        out.print(f"Offers: {result.offers_issued:,} promo codes and accruals issued; exported {exported}.")
    sent = sum(c.get("sent", 0) + c.get("recovered", 0) for c in counts.values())
    out.print(
        f"Apply complete: {result.enrollments_written:,} enrollments written, {sent:,} messages sent"
        f" ({result.delivery.get('cost', 0):,.2f} {result.plan.currency}), {len(result.render_failures):,} not rendered,"
        f" {len(result.delivery.get('in_doubt', [])):,} in doubt."
    )


@click.command("force-unlock")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def force_unlock_command(ctx: click.Context, yes: bool) -> None:
    """Release the apply lock left by a process that is gone."""
    from ..connect import open_state_store

    project = load_project_or_exit(ctx)
    store = _guarded(lambda: open_state_store(project))
    try:
        holder = store.lock_holder()
        if holder is None:
            console().print("The state is not locked.")
            return
        if not yes and not click.confirm(f"Release the lock held by {holder.describe()}?"):
            sys.exit(1)
        store.force_unlock()
        console().print(f"[green]✓[/] released the lock held by {holder.describe()}.")
    finally:
        store.close()


@click.command("outcomes")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def outcomes_command(ctx: click.Context, file: Path, output_format: str) -> None:
    """Record outcomes a provider reported (JSON lines or CSV: key, type, at,
    payload): delivered, opened, clicked, converted, unsubscribed, bounced.
    Exit 1 when a row is invalid or names no sent message."""
    from ..connect import open_state_store
    from ..outcomes import import_outcomes, read_outcomes

    project = load_project_or_exit(ctx)
    store = _guarded(lambda: open_state_store(project))
    try:
        result = import_outcomes(store, read_outcomes(file))
    finally:
        store.close()
    if output_format == "json":
        emit_json(result.to_dict())
    else:
        out = console()
        for line, error in result.invalid:
            out.print(f"[red]error[/]: {file}:{line}: {error}")
        for key in result.unknown_keys[:20]:
            out.print(f"[yellow]unknown message[/]: {key}")
        out.print(f"{result.recorded:,} outcomes recorded, {result.repeated:,} already known, "
                  f"{len(result.unknown_keys):,} unknown messages, {len(result.invalid):,} invalid rows.")
    sys.exit(1 if result.invalid or result.unknown_keys else 0)


@click.command("settle")
@click.argument("keys", nargs=-1)
@click.option("--sent", "provider_has_it", flag_value=True, default=None, help="The provider has these messages: never send them again.")
@click.option("--not-sent", "provider_has_it", flag_value=False, help="The provider never got them: the next apply sends them once.")
@click.option("--provider-id", help="The provider's id for the message (with --sent and one key).")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=0, show_default=True)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def settle_command(ctx: click.Context, keys: tuple[str, ...], provider_has_it: bool | None, provider_id: str | None,
                   lock_timeout: float, output_format: str) -> None:
    """Settle messages in doubt (a provider call that got no answer) once you
    have checked the provider. Without KEYS: list the messages in doubt."""
    import os
    import socket

    from rich.markup import escape

    from ..connect import open_state_store
    from ..delivery import settle_in_doubt
    from ..state import locked

    if keys and provider_has_it is None:
        fail("say what the provider answered: --sent or --not-sent")
    if provider_id and (not provider_has_it or len(keys) != 1):
        fail("--provider-id goes with --sent and exactly one key")
    project = load_project_or_exit(ctx)
    store = _guarded(lambda: open_state_store(project))
    try:
        if not keys:
            doubtful = store.in_doubt()
            if output_format == "json":
                emit_json({"in_doubt": [{"key": m.key, "channel": m.channel, "customer_id": m.customer_id,
                                         "since": m.updated_at.isoformat(), "error": m.error} for m in doubtful]})
            else:
                for m in doubtful:
                    console().print(f"[red]in doubt[/] {escape(m.key)} ({m.channel}, since {m.updated_at:%Y-%m-%d %H:%M}Z)"
                                    + (f": {escape(m.error)}" if m.error else ""))
                console().print(f"{len(doubtful):,} messages in doubt.")
            return
        def settle():
            with locked(store, f"campaignctl settle ({socket.gethostname()}:{os.getpid()})", lock_timeout):
                return settle_in_doubt(store, keys, provider_has_it=provider_has_it, provider_id=provider_id)

        result = _guarded(settle)
    finally:
        store.close()
    if output_format == "json":
        emit_json(result.as_dict())
    else:
        for key in result.not_in_doubt:
            console().print(f"[yellow]not in doubt[/] {escape(key)}: left as it is")
        console().print(f"{len(result.sent):,} marked sent, {len(result.released):,} released to be sent again by the next apply.")
    sys.exit(1 if result.not_in_doubt else 0)
