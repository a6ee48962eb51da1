"""The command line: thin Click commands, one module per command group, each
calling one library function and mapping its result to output and exit code."""

from __future__ import annotations

from .app import cli, main

__all__ = ["cli", "main"]
