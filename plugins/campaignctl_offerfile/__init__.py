"""Built-in offer sink ``offer_file``: issued promo codes and bonus accruals as
a CSV file or a Parquet dataset, for a point of sale or loyalty system to load.

Options:
  path:   the file (default ``out/offers.csv``, relative to the project); a path
          ending in ``.parquet`` is a directory of Parquet part files
  format: ``csv`` or ``parquet`` (default: from the path's suffix)

Exactly once: the sink reads the keys it already holds when it first exports
and skips them, so a batch handed over again after a crash adds nothing. A CSV
batch is appended and fsynced before export() returns (a torn last line, the
remains of a killed write, is cut first, as the outbox channel does); a
Parquet batch is written to a temporary file, fsynced and renamed into place,
so a part file is whole or absent.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from campaignctl.contracts import ExportedOffer, unknown_options
from campaignctl.hookspecs import hookimpl

__version__ = "0.1.0"

COLUMNS = ("key", "campaign", "customer_id", "offer", "kind", "code", "pool", "issued_at", "valid_from", "valid_until", "max_uses", "terms")
DEFAULT_PATH = "out/offers.csv"


def rows(offers: Sequence[ExportedOffer]) -> list[list]:
    """The offers as rows of COLUMNS; terms as compact JSON (one line, whatever
    its text), encoded once per terms object the offers share."""
    encoded: dict[int, tuple[object, str]] = {}
    found = []
    for offer in offers:
        terms = encoded.get(id(offer.terms))
        if terms is None or terms[0] is not offer.terms:
            terms = encoded[id(offer.terms)] = (offer.terms, json.dumps(dict(offer.terms), ensure_ascii=False, sort_keys=True, separators=(",", ":")))
        found.append([offer.key, offer.campaign, offer.customer_id, offer.offer, offer.kind, offer.code, offer.pool, offer.issued_at,
                      offer.valid_from, offer.valid_until, offer.max_uses, terms[1]])
    return found


@dataclass
class _ExactlyOnceSink:
    """Skips the offers whose keys the sink already holds (read once, on the
    first export), writes the rest with ``_write`` and remembers them."""

    path: Path
    _known: set[str] | None = field(default=None, repr=False)

    def export(self, offers: Sequence[ExportedOffer]) -> None:
        if self._known is None:
            self._known = self._read_known_keys()
        fresh = [offer for offer in offers if offer.key not in self._known]
        if fresh:
            self._write(fresh)
            self._known.update(offer.key for offer in fresh)

    def _read_known_keys(self) -> set[str]:
        raise NotImplementedError

    def _write(self, fresh: list[ExportedOffer]) -> None:
        """Write ``fresh`` durably before returning."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing is held open between batches."""


class CsvOfferSink(_ExactlyOnceSink):
    def _write(self, fresh: list[ExportedOffer]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows(rows(fresh))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as sink:
            if _drop_torn_line(sink) == 0:
                sink.write((",".join(COLUMNS) + "\n").encode())
            sink.write(buffer.getvalue().encode("utf-8"))
            sink.flush()
            os.fsync(sink.fileno())

    def _read_known_keys(self) -> set[str]:
        known = set()
        if self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as source:
                for record in csv.reader(_complete_lines(source)):
                    known.add(record[0])
            known.discard("key")  # the header
        return known


def _complete_lines(source):
    """Lines ending in a newline: a torn last line (never reported exported) is not a key held."""
    for line in source:
        if line.endswith("\n"):
            yield line


def _drop_torn_line(sink) -> int:
    """Cut an incomplete last line; return the file's size after."""
    size = sink.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    sink.seek(size - 1)
    if sink.read(1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        sink.seek(start)
        newline = sink.read(end - start).rfind(b"\n")
        if newline >= 0:
            sink.truncate(start + newline + 1)
            sink.seek(0, os.SEEK_END)
            return start + newline + 1
        end = start
    sink.truncate(0)
    return 0


class ParquetOfferSink(_ExactlyOnceSink):
    """``path`` is a directory of part files."""

    def _write(self, fresh: list[ExportedOffer]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*rows(fresh)))
        types = {"max_uses": pa.int64()}
        table = pa.table({name: pa.array(values, type=types.get(name, pa.string())) for name, values in zip(COLUMNS, columns)})
        name = f"part-{len(list(self.path.glob('part-*.parquet'))):06d}-{uuid.uuid4().hex[:8]}"
        temporary = self.path / f".{name}.tmp"
        pq.write_table(table, temporary)
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, self.path / f"{name}.parquet")
        _fsync_directory(self.path)

    def _read_known_keys(self) -> set[str]:
        import pyarrow.parquet as pq

        self.path.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.glob(".part-*.tmp"):  # a write killed before its rename: never reported exported
            leftover.unlink()
        known = set()
        for part in sorted(self.path.glob("part-*.parquet")):
            known.update(pq.read_table(part, columns=["key"]).column("key").to_pylist())
        return known


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_OPTIONS = ("path", "format")


def create_sink(config, project_root: Path):
    """The factory registered as ``offer_file``."""
    options = dict(config.options)
    if problem := unknown_options(options, _OPTIONS, "offer_file sink"):
        raise ValueError(problem)
    path = Path(str(options.get("path") or DEFAULT_PATH))
    path = path if path.is_absolute() else Path(project_root) / path
    kind = options.get("format") or ("parquet" if path.suffix.lower() == ".parquet" else "csv")
    if kind not in ("csv", "parquet"):
        raise ValueError(f"offer_file sink: option 'format' must be csv or parquet, not {kind!r}")
    return ParquetOfferSink(path) if kind == "parquet" else CsvOfferSink(path)


@hookimpl
def register_offer_sinks(register) -> None:
    register("offer_file", create_sink)
