from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="campaignctl")
def cli() -> None:
    """Campaign-as-code for retail CRM."""


def main() -> None:
    cli()
