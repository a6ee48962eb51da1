"""Benchmark: exactly-once delivery (campaignctl.delivery.deliver) into the
outbox channel with SQLite state, against a plain loop that only writes the
same JSON lines to a file in the same batches (same fsync per batch).

    python bench/bench_delivery.py --messages 100000 --batch-size 500 --runs 3

Prints, as the median of the runs: messages/s of both, their ratio, the
bookkeeping's own cost per message, and the rate of a rerun that finds every
message already sent. The issue's target: deliver >= 5,000 messages/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Only what is measured: loading every plugin would not change the figures, only start-up.
os.environ.setdefault("CAMPAIGNCTL_LOAD_PLUGINS", "sqlite,outbox")

from campaignctl import plugins  # noqa: E402
from campaignctl.contracts import OutgoingMessage  # noqa: E402
from campaignctl.delivery import DueMessage, deliver  # noqa: E402
from campaignctl.model import Channel, PluginConfig  # noqa: E402
from campaignctl.state import locked  # noqa: E402

TARGET = 5_000  # messages/s, from the issue


def due_messages(count: int) -> list[DueMessage]:
    return [
        DueMessage(
            OutgoingMessage(
                f"black_friday/3f9a1c/{n}/0/2025-11-28", "black_friday", str(n), "email", f"customer{n}@example.com",
                {"subject": "Black Friday: -30% on your favourites", "text": "Hello! Your personal offer is waiting."},
                {"offer": "bf30", "arm": "A"},
            ),
            step=0, cost=0.15,
        )
        for n in range(count)
    ]


def outbox(root: Path):
    return plugins.registry().channels["outbox"](Channel("email", "outbox", "email", 0.15, {}), root)


def plain_loop(messages: list[DueMessage], batch_size: int, root: Path) -> float:
    """Seconds to write every message with the outbox alone: no ledger."""
    sender = outbox(root)
    started = time.perf_counter()
    for start in range(0, len(messages), batch_size):
        sender.send([m.message for m in messages[start:start + batch_size]])
    return time.perf_counter() - started


def with_ledger(messages: list[DueMessage], batch_size: int, root: Path) -> tuple[float, float]:
    """Seconds for deliver() into a fresh state and outbox, and for a rerun."""
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), root)
    senders = {"email": outbox(root)}
    try:
        with locked(store, "bench", timeout=0):
            started = time.perf_counter()
            report = deliver(store, senders, messages, batch_size=batch_size)
            first = time.perf_counter() - started
            assert report.total("sent") == len(messages), report.counts
            started = time.perf_counter()
            report = deliver(store, senders, messages, batch_size=batch_size)
            rerun = time.perf_counter() - started
            assert report.total("already_sent") == len(messages), report.counts
    finally:
        store.close()
    return first, rerun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    messages = due_messages(args.messages)
    plain, delivered, reruns = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
            plain.append(plain_loop(messages, args.batch_size, Path(tmp) / "plain"))
            first, rerun = with_ledger(messages, args.batch_size, Path(tmp) / "ledger")
            delivered.append(first)
            reruns.append(rerun)

    n = args.messages
    plain_s, deliver_s, rerun_s = (statistics.median(times) for times in (plain, delivered, reruns))
    rate = n / deliver_s
    print(f"{n:,} messages, batches of {args.batch_size}, median of {args.runs} run(s)")
    print(f"plain outbox loop : {n / plain_s:>10,.0f} msg/s  ({plain_s:.2f} s)")
    print(f"deliver + ledger  : {rate:>10,.0f} msg/s  ({deliver_s:.2f} s)")
    print(f"ratio             : {deliver_s / plain_s:>10.2f} x the plain loop's time")
    print(f"bookkeeping       : {(deliver_s - plain_s) / n * 1e6:>10.1f} us/message")
    print(f"rerun, all sent   : {n / rerun_s:>10,.0f} msg/s  ({rerun_s:.2f} s)")
    print(f"target {TARGET:,} msg/s: {'met' if rate >= TARGET else 'NOT met'}")
    return 0 if rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
