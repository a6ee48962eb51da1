"""Outcomes from outside: delivery, opens, clicks, unsubscribes and bounces that
a provider reports (an export, a webhook log), recorded against the ledger so
cascade conditions (`if: not_opened`) and the unsubscribe gate see them."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .state import OUTCOME_TYPES, Outcome, StateStore


@dataclass(frozen=True)
class OutcomeImport:
    recorded: int  # new outcomes stored
    repeated: int  # already stored (a replayed export is harmless)
    unknown_keys: tuple[str, ...] = ()  # no such message in the ledger
    invalid: tuple[tuple[int, str], ...] = field(default=())  # (line, why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "repeated": self.repeated,
            "unknown_keys": list(self.unknown_keys),
            "invalid": [{"line": line, "error": error} for line, error in self.invalid],
        }


def read_outcomes(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, row) from JSON lines or, for a .csv file, CSV with a header:
    key, type, at (ISO 8601) and an optional JSON payload."""
    with path.open(encoding="utf-8", newline="") as stream:
        if path.suffix.lower() == ".csv":
            for number, row in enumerate(csv.DictReader(stream), start=2):
                yield number, dict(row)
            return
        for number, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, {"_error": f"not JSON: {exc.msg}"}


def parse_outcome(row: dict[str, Any]) -> Outcome:
    """One outcome from a row; ValueError says what is wrong with it."""
    if "_error" in row:
        raise ValueError(row["_error"])
    key, kind, at = row.get("key"), row.get("type"), row.get("at")
    if not key:
        raise ValueError("no message key")
    if kind not in OUTCOME_TYPES:
        raise ValueError(f"unknown outcome type {kind!r}; known: {', '.join(sorted(OUTCOME_TYPES))}")
    try:
        moment = datetime.fromisoformat(str(at))
    except ValueError:
        raise ValueError(f"{at!r} is not an ISO 8601 time") from None
    payload = row.get("payload") or {}
    if isinstance(payload, str):
        payload = json.loads(payload)
    return Outcome(str(key), kind, moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc), payload)


def import_outcomes(store: StateStore, rows: Iterable[tuple[int, dict[str, Any]]]) -> OutcomeImport:
    """Record every valid outcome of a known message; report the rest, all at once."""
    outcomes, invalid = [], []
    for number, row in rows:
        try:
            outcomes.append(parse_outcome(row))
        except ValueError as exc:
            invalid.append((number, str(exc)))
    known = {message.key for message in store.messages(sorted({o.message_key for o in outcomes}))}
    unknown = sorted({o.message_key for o in outcomes if o.message_key not in known})
    recordable = [o for o in outcomes if o.message_key in known]
    recorded = store.record_outcomes(recordable) if recordable else 0
    return OutcomeImport(recorded, len(recordable) - recorded, tuple(unknown), tuple(invalid))
