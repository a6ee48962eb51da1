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
from .model import Project
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


def _create(factories: Mapping[str, Any], config: Any, project: Project, environ: Mapping[str, str] | None, subject: str) -> Any:
    """The plugin ``config`` names, made by its registered factory with the
    secrets in its options resolved; a failure is located at ``config``."""
    options = _options(config.options, os.environ if environ is None else environ)
    factory = factories[config.plugin]
    try:
        return factory(replace(config, options=options), project.root)
    except Exception as exc:  # a plugin's own error type; shown with where it is configured
        raise _located_error(config.location, subject, exc, f"check {subject} in campaignctl.yaml") from None


def open_data_source(project: Project, environ: Mapping[str, str] | None = None, *, check: bool = True) -> DataSource:
    """Connect the project's data source and check it against the data contract."""
    from .datacontract import check_source

    config = project.data_source
    source = _create(registry().data_sources, config, project, environ, "data_source")
    if check:
        problems = check_source(config, source)
        if problems:
            source.close()
            raise ProjectError(problems)
    return source


def open_state_store(project: Project, environ: Mapping[str, str] | None = None) -> Any:
    """The project's state store (campaignctl.state.StateStore), migrated."""
    return _create(registry().state_stores, project.state_store, project, environ, "state_store")


def open_senders(project: Project, channels: list[str], environ: Mapping[str, str] | None = None) -> dict[str, ChannelSender]:
    """Senders for the named project channels."""
    return {name: _create(registry().channels, project.channels[name], project, environ, f"channels.{name}") for name in channels}


def open_offer_sinks(project: Project, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The project's offer sinks (campaignctl.contracts.OfferSink), by name."""
    sinks = {}
    try:
        for name, config in project.offer_sinks.items():
            sinks[name] = _create(registry().offer_sinks, config, project, environ, f"offer_sinks.{name}")
    except BaseException:
        for sink in sinks.values():
            sink.close()
        raise
    return sinks
