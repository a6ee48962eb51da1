"""Built-in channel ``outbox``: every message becomes one JSON line in a file.

The local sink for the demo and for tests, and a real integration point: a
retailer's own delivery job can tail the file. A batch is flushed and fsynced
before send() returns, so a message reported sent is on disk.

``lookup(keys)`` answers from the file whether a message was written, which
lets campaignctl settle a delivery interrupted by a crash (campaignctl.delivery)
instead of leaving it in doubt.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from campaignctl.contracts import OutgoingMessage, SendResult, unknown_options
from campaignctl.hookspecs import hookimpl
from campaignctl.model import Channel

__version__ = "0.1.0"


@dataclass
class OutboxSender:
    path: Path
    channel: str

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "OutboxSender":
        if problem := unknown_options(channel.options, ("path",), "outbox"):
            raise ValueError(problem)
        path = Path(channel.options.get("path", f"out/{channel.name}.jsonl"))
        return cls(path if path.is_absolute() else project_root / path, channel.name)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        refused = {message.key: problem for message in messages if (problem := _address_problem(message.to))}
        lines = [self._line(message) for message in messages if message.key not in refused]
        with self.path.open("a+b") as sink:
            _drop_torn_line(sink)
            sink.write("".join(lines).encode("utf-8"))
            sink.flush()
            os.fsync(sink.fileno())
        return [
            SendResult(message.key, "permanent_failure", error=refused[message.key], address_invalid=True)
            if message.key in refused
            else SendResult(message.key, "sent", provider_id=_provider_id(message.key))
            for message in messages
        ]

    def lookup(self, keys: Sequence[str]) -> dict[str, str | None]:
        """For each key, its provider id if a complete line for it is in the file,
        else None: a write that never finished left no complete line, and send()
        removes its torn remains before appending."""
        wanted = set(keys)
        found: set[str] = set()
        if self.path.exists():
            with self.path.open("rb") as source:
                for line in source:
                    if line.endswith(b"\n") and (key := json.loads(line).get("key")) in wanted:
                        found.add(key)
        return {key: _provider_id(key) if key in found else None for key in keys}

    def _line(self, message: OutgoingMessage) -> str:
        record = {
            "key": message.key,
            "campaign": message.campaign,
            "customer_id": message.customer_id,
            "channel": message.channel,
            "to": message.to,
            "parts": dict(message.parts),
            "metadata": dict(message.metadata),
        }
        return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"

    def close(self) -> None:
        """Nothing is held open between batches."""


def _address_problem(to: str) -> str | None:
    """Why ``to`` can be no address on any channel, or None: the outbox does not
    know the channel's address format, only that an address is one line of text."""
    if not isinstance(to, str) or not to.strip():
        return "no address"
    if any(ord(ch) < 32 for ch in to):
        return f"the address {to!r} has control characters"
    return None


def _provider_id(key: str) -> str:
    return f"outbox:{key}"


def _drop_torn_line(sink) -> None:
    """Cut an incomplete last line, the remains of a write killed midway (that
    message was never reported sent), so the next line does not join onto it."""
    size = sink.seek(0, os.SEEK_END)
    if size == 0:
        return
    sink.seek(size - 1)
    if sink.read(1) == b"\n":
        return
    end = size
    while end > 0:  # back to the last complete line, a block at a time
        start = max(0, end - 65536)
        sink.seek(start)
        newline = sink.read(end - start).rfind(b"\n")
        if newline >= 0:
            sink.truncate(start + newline + 1)
            return
        end = start
    sink.truncate(0)


@hookimpl
def register_channels(register):
    register("outbox", OutboxSender.from_config)
