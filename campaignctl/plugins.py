"""The plugin manager: built-ins and third-party plugins arrive the same way,
through the ``campaignctl`` entry-point group, and are loaded lazily on first use
(never at import time).

Environment:
- ``CAMPAIGNCTL_LOAD_PLUGINS``: comma-separated allow-list of plugin names
  (entry-point names); empty string loads none.
- ``CAMPAIGNCTL_BLOCK_PLUGINS``: comma-separated names never to load.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "campaignctl"


class PluginError(Exception):
    """A plugin could not be loaded or registered something invalid."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str | None
    distribution: str | None
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class Registry:
    """What the loaded plugins registered, by kind and name."""

    data_sources: dict[str, Callable[..., Any]]
    channels: dict[str, Callable[..., Any]]
    state_stores: dict[str, Callable[..., Any]]
    offer_sinks: dict[str, Callable[..., Any]] = field(default_factory=dict)


_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None
_distributions: dict[str, importlib.metadata.Distribution | None] = {}


def _names_from_env(variable: str) -> set[str] | None:
    raw = os.environ.get(variable)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, loading plugins on first call (idempotent)."""
    global _pm
    if _pm is None:
        _pm = _load()
    return _pm


def _load() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("campaignctl")
    pm.add_hookspecs(hookspecs)
    allowed = _names_from_env("CAMPAIGNCTL_LOAD_PLUGINS")
    for name in _names_from_env("CAMPAIGNCTL_BLOCK_PLUGINS") or ():
        pm.set_blocked(name)
    seen: set[str] = set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if name in seen or (allowed is not None and name not in allowed) or pm.is_blocked(name):
            continue
        seen.add(name)
        try:
            plugin = entry_point.load()
        except Exception as exc:  # a broken plugin must not hide which one it is
            raise PluginError(f"plugin {name!r} ({entry_point.value}) failed to load: {exc}") from exc
        pm.register(plugin, name=name)
        _distributions[name] = getattr(entry_point, "dist", None)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} (check the spelling of the hook implementation against campaignctl.hookspecs)") from exc
    return pm


def reset() -> None:
    """Forget loaded plugins (tests, and after changing the environment variables)."""
    global _pm, _registry
    _pm = None
    _registry = None
    _distributions.clear()


def register_plugin(plugin: object, name: str) -> None:
    """Register an in-process plugin object (used by tests and embedding applications)."""
    global _registry
    pm = plugin_manager()
    pm.register(plugin, name=name)
    pm.check_pending()
    _registry = None


def registry() -> Registry:
    """Call the register_* hooks once and collect what they registered."""
    global _registry
    if _registry is None:
        pm = plugin_manager()
        _registry = Registry(
            data_sources=_collect(pm.hook.register_data_sources, "data source"),
            channels=_collect(pm.hook.register_channels, "channel"),
            state_stores=_collect(pm.hook.register_state_stores, "state store"),
            offer_sinks=_collect(pm.hook.register_offer_sinks, "offer sink"),
        )
    return _registry


def _collect(hook: Any, kind: str) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}

    def register(name: str, factory: Callable[..., Any]) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"a {kind} must be registered with a non-empty name, got {name!r}")
        if not callable(factory):
            raise PluginError(f"{kind} {name!r}: the registered factory is not callable")
        if name in found:
            raise PluginError(f"{kind} {name!r} is registered twice; block one of the plugins with CAMPAIGNCTL_BLOCK_PLUGINS")
        found[name] = factory

    hook(register=register)
    return found


def plugin_infos() -> list[PluginInfo]:
    """Loaded plugins with their versions and the hooks each implements."""
    pm = plugin_manager()
    infos = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        dist = _distributions.get(name)
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        version = dist.version if dist else getattr(plugin, "__version__", None)
        infos.append(PluginInfo(name, version, dist.metadata["Name"] if dist else None, hooks))
    return infos
