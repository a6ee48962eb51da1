from __future__ import annotations

import click

from .. import __version__
from ..plugins import PluginError, plugin_manager
from .output import fail


class _ProjectOptionAnywhere(click.Group):
    """Accept -C/--project after the command too (`campaignctl validate -C campaigns`),
    as people type it; it is moved in front of the command before parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _project_option_first(args))


def _project_option_first(args: list[str]) -> list[str]:
    front, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in ("-C", "--project") and i + 1 < len(args):
            front += args[i : i + 2]
            i += 2
            continue
        if arg.startswith("--project="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


@click.group(cls=_ProjectOptionAnywhere, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="campaignctl")
@click.option(
    "-C",
    "--project",
    type=click.Path(file_okay=True, dir_okay=True),
    default=".",
    envvar="CAMPAIGNCTL_PROJECT",
    show_default=True,
    help="The project directory (holding campaignctl.yaml).",
)
def cli(project: str) -> None:
    """Campaign-as-code for retail CRM: validate, plan and apply campaigns kept in git."""


def _add_builtin_commands() -> None:
    from .audience import audience_group
    from .data import data_group
    from .demo import demo_data_command
    from .offer import offer_group
    from .plan_commands import apply_command, force_unlock_command, outcomes_command, plan_command, settle_command
    from .project_commands import init_command, plugins_command, schema_group, validate_command
    from .render import render_command
    from .report import report_command
    from .segment import segment_group
    from .serve import serve_command

    for command in (init_command, validate_command, plugins_command, schema_group, demo_data_command, segment_group, data_group,
                    plan_command, apply_command, force_unlock_command, outcomes_command, settle_command, audience_group,
                    serve_command, render_command, offer_group, report_command):
        cli.add_command(command)


_add_builtin_commands()


def main() -> None:
    try:
        plugin_manager().hook.register_commands(cli=cli)
    except PluginError as exc:
        fail(str(exc))
    cli()
