"""Built-in channel ``email_http``: e-mail through a provider's HTTP API.

What it does, its options and answers: ``campaignctl_email_http.sender`` and docs/plugins.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from campaignctl.hookspecs import hookimpl

__version__ = "0.1.0"

# The sender (smtplib or http.client, ssl, the e-mail builder) is imported on
# first use: loading plugins must stay cheap for commands that send nothing.


def __getattr__(name: str) -> Any:
    if not name.startswith("__"):
        from . import sender

        return getattr(sender, name)
    raise AttributeError(name)


def _create_sender(channel, project_root: Path):
    from .sender import HttpEmailSender

    return HttpEmailSender.from_config(channel, project_root)


@hookimpl
def register_channels(register):
    register("email_http", _create_sender)
