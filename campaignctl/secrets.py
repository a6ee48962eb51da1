"""Secrets are written as ``${env:NAME}`` and resolved late, only where a
command needs the value; a resolved value never reaches a plan, a log or a report."""

from __future__ import annotations

import re
from typing import Any, Mapping

from .diagnostics import Diagnostic, Location
from .loader import locate

ENV_REFERENCE = re.compile(r"\$\{env:([A-Z_][A-Z0-9_]*)\}")


def references(value: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    """(path, variable name) of every ${env:...} inside a nested value."""
    found: list[tuple[tuple, str]] = []
    if isinstance(value, str):
        found += [(path, match.group(1)) for match in ENV_REFERENCE.finditer(value)]
    elif isinstance(value, dict):
        for key, child in value.items():
            found += references(child, path + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += references(child, path + (index,))
    return found


def resolve(value: Any, environ: Mapping[str, str], *, where: Any = None, base: tuple = ()) -> tuple[Any, list[Diagnostic]]:
    """``value`` with every ${env:NAME} replaced, and a located diagnostic for
    each variable that is not set. ``where`` is the located mapping ``value``
    came from, for error positions."""
    missing = [(path, name) for path, name in references(value) if name not in environ]
    diagnostics = [
        Diagnostic(
            locate(where, base + path) if where is not None else Location(""),
            "secret",
            f"environment variable {name} is not set",
            f"export {name}=... before running this command",
        )
        for path, name in missing
    ]
    return _substitute(value, environ), diagnostics


def _substitute(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return ENV_REFERENCE.sub(lambda match: environ.get(match.group(1), match.group(0)), value)
    if isinstance(value, dict):
        return {key: _substitute(child, environ) for key, child in value.items()}
    if isinstance(value, list):
        return [_substitute(child, environ) for child in value]
    return value

