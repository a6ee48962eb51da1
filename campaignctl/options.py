"""Checks the channel plugins share when they read their options, so that the
same mistake gets the same message from every channel. ``what`` names the
channel in the message (``smtp``, ``apns channel 'push'``); ``error`` is the
exception the plugin raises for configuration (ValueError or a subclass)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def checked_options(options: Mapping[str, Any], known: Sequence[str], what: str) -> dict[str, Any]:
    """The options as a plain dict; ValueError for any ``known`` does not name
    (a typo must not be silently ignored)."""
    from .contracts import unknown_options

    if problem := unknown_options(options, known, what):
        raise ValueError(problem)
    return dict(options)


def project_path(value: Any, project_root: Path) -> Path:
    """A path option: absolute as given, otherwise relative to the project."""
    path = Path(str(value))
    return path if path.is_absolute() else project_root / path


def ca_file_option(value: Any, project_root: Path, what: str, error: type[ValueError] = ValueError) -> str | None:
    """The ``ca_file`` option (a PEM bundle to trust instead of the system's) as
    a path that exists, or None when not given."""
    if value is None:
        return None
    path = project_path(value, project_root)
    if not path.is_file():
        raise error(f"{what}: option 'ca_file': no file {str(path)!r}")
    return str(path)


def number_option(options: Mapping[str, Any], name: str, kind: type, default: Any, *, minimum: float, what: str,
                  error: type[ValueError] = ValueError) -> Any:
    """Option ``name`` as ``kind`` (int or float), at least ``minimum``."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) or value < minimum:
        raise error(f"{what}: option {name!r} must be a{'n integer' if kind is int else ' number'} of at least {minimum}, not {value!r}")
    return kind(value)


def seconds_option(options: Mapping[str, Any], name: str, default: int, what: str) -> int:
    """A whole number of seconds, 0 or more (a push service's ``ttl``)."""
    value = options.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what}: option {name!r} must be whole seconds, 0 or more, not {value!r}")
    return value
