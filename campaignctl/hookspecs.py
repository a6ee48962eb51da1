"""Every hook campaignctl calls. Hooks are few and each is a registry: the host
passes a ``register`` callback, so names and duplicates are checked in one
place (campaignctl.plugins), and what is registered satisfies a Protocol from
campaignctl.contracts.

Call hooks with keyword arguments; an implementation may accept fewer
arguments than its spec, so specs can grow without breaking plugins.
"""

from __future__ import annotations

from typing import Callable

import click
import pluggy

from .contracts import ChannelFactory, DataSourceFactory, OfferSinkFactory, StateStoreFactory

hookspec = pluggy.HookspecMarker("campaignctl")
hookimpl = pluggy.HookimplMarker("campaignctl")


@hookspec
def register_data_sources(register: Callable[[str, DataSourceFactory], None]) -> None:
    """Register data sources: ``register(name, factory)``; the factory takes the
    project's data_source settings and the project directory and returns a DataSource."""


@hookspec
def register_channels(register: Callable[[str, ChannelFactory], None]) -> None:
    """Register channel senders: ``register(name, factory)``; the factory takes a
    project Channel and the project directory and returns a ChannelSender."""


@hookspec
def register_state_stores(register: Callable[[str, StateStoreFactory], None]) -> None:
    """Register state stores: ``register(name, factory)``; the factory takes the
    project's state_store settings and the project directory and returns a StateStore."""


@hookspec
def register_offer_sinks(register: Callable[[str, OfferSinkFactory], None]) -> None:
    """Register offer sinks: ``register(name, factory)``; the factory takes an
    ``offer_sinks`` entry of the project (campaignctl.model.OfferSinkConfig) and
    the project directory and returns an OfferSink."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add Click commands or groups to the ``campaignctl`` command line."""
