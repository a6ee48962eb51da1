"""Built-in channel ``outbox``: every message becomes one JSON line in a file.

The local sink for the demo and for tests, and a real integration point: a
retailer's own delivery job can tail the file. A batch is flushed and fsynced
before send() returns, so a message reported sent is on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from campaignctl.contracts import OutgoingMessage, SendResult
from campaignctl.hookspecs import hookimpl
from campaignctl.model import Channel

__version__ = "0.1.0"


@dataclass
class OutboxSender:
    path: Path
    channel: str

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "OutboxSender":
        path = Path(channel.options.get("path", f"out/{channel.name}.jsonl"))
        return cls(path if path.is_absolute() else project_root / path, channel.name)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [self._line(message) for message in messages]
        with self.path.open("a", encoding="utf-8") as sink:
            sink.writelines(lines)
            sink.flush()
            os.fsync(sink.fileno())
        return [SendResult(message.key, "sent", provider_id=f"outbox:{message.key}") for message in messages]

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


@hookimpl
def register_channels(register):
    register("outbox", OutboxSender.from_config)
