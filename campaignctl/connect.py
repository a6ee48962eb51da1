"""Open what a project names: its data source, state store and channel senders.

The one place where ``${env:...}`` secrets are resolved (late, only for what the
command uses) and plugin factories are called; a problem is raised as a
ProjectError with every located diagnostic, never as a traceback.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping

from .contracts import ChannelSender, DataSource
from .diagnostics import Diagnostic, ProjectError
from .loader import LDict
from .model import Channel, Project
from .plugins import registry
from .secrets import resolve


def _options(options: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Options with ${env:...} resolved; an unset variable is located where the options are."""
    resolved, problems = resolve(dict(options), environ, where=options if isinstance(options, LDict) else None)
    if problems:
        raise ProjectError(problems)
    return resolved


def _located_error(location, subject: str, exc: Exception, hint: str) -> ProjectError:
    # Plugin errors are written not to hold secrets (the sources redact DSNs).
    return ProjectError([Diagnostic(location, subject, str(exc), hint)])


def open_data_source(project: Project, environ: Mapping[str, str] | None = None, *, check: bool = True) -> DataSource:
    """Connect the project's data source and check it against the data contract."""
    from .datacontract import check_source

    config = project.data_source
    options = _options(config.options, os.environ if environ is None else environ)
    factory = registry().data_sources[config.plugin]
    try:
        source = factory(replace(config, options=options), project.root)
    except Exception as exc:  # a plugin's own error type; shown with where it is configured
        raise _located_error(config.location, "data_source", exc, "check data_source in campaignctl.yaml") from None
    if check:
        problems = check_source(config, source)
        if problems:
            source.close()
            raise ProjectError(problems)
    return source


def open_state_store(project: Project, environ: Mapping[str, str] | None = None) -> Any:
    """The project's state store (campaignctl.state.StateStore), migrated."""
    config = project.state_store
    options = _options(config.options, os.environ if environ is None else environ)
    factory = registry().state_stores[config.plugin]
    try:
        return factory(replace(config, options=options), project.root)
    except Exception as exc:
        raise _located_error(config.location, "state_store", exc, "check state_store in campaignctl.yaml") from None


def open_senders(project: Project, channels: list[str], environ: Mapping[str, str] | None = None) -> dict[str, ChannelSender]:
    """Senders for the named project channels."""
    environ = os.environ if environ is None else environ
    senders = {}
    for name in channels:
        channel: Channel = project.channels[name]
        options = _options(channel.options, environ)
        factory = registry().channels[channel.plugin]
        try:
            senders[name] = factory(replace(channel, options=options), project.root)
        except Exception as exc:
            raise _located_error(channel.location, f"channels.{name}", exc, f"check channels.{name} in campaignctl.yaml") from None
    return senders
