"""Located problems: every error a user sees names file:line:col and what to do."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple


class Location(NamedTuple):
    """A position in a source file; line and column are 1-based, as editors show
    them. A tuple because the loader makes one for every key and value."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a project. ``subject`` is the thing at fault ("cascade",
    "segments.loyal.where"), ``hint`` says what to do about it."""

    location: Location
    subject: str
    message: str
    hint: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        text = f"{self.location}: {self.subject}: {self.message}" if self.subject else f"{self.location}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def to_json(self) -> dict:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "col": self.location.col,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "hint": self.hint,
        }


class ProjectError(Exception):
    """Raised with every diagnostic found, never just the first."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.location, d.subject, d.message))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def display_path(path: Path, root: Path) -> str:
    """Paths in messages are relative to the directory the user ran from when possible."""
    absolute = Path(os.path.abspath(path))
    for base in (_absolute(Path.cwd()), _absolute(root)):
        if absolute.is_relative_to(base):
            return str(absolute.relative_to(base))
    return str(path)


@lru_cache(maxsize=16)
def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))
