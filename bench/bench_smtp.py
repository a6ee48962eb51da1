"""Benchmark: the smtp channel into a local aiosmtpd server (its own process,
so client and server do not share one interpreter), one connection reused
across the run against a new connection per message, in the same run.

    python bench/bench_smtp.py --messages 2000 --runs 3

Prints, as the median of the runs, messages/s for: a connection per message;
the default reuse (max_messages_per_connection 100); one connection for the
whole run; the same with DKIM signing (RSA 2048); and building the e-mails
alone, with no network. Then the same figures as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Only what is measured: loading every plugin would not change the figures, only start-up.
os.environ.setdefault("CAMPAIGNCTL_LOAD_PLUGINS", "smtp")

from campaignctl import plugins  # noqa: E402
from campaignctl.contracts import OutgoingMessage  # noqa: E402
from campaignctl.mime import build_email  # noqa: E402
from campaignctl.model import Channel  # noqa: E402


def messages(count: int) -> list[OutgoingMessage]:
    html = "<html><body>" + "<p>Плед «Уют» ждёт вас в корзине: −15% до воскресенья.</p>" * 20 + "</body></html>"
    return [
        OutgoingMessage(
            f"abandoned_cart/v2/{n}/0/2026-11-24", "abandoned_cart", str(n), "email", f"customer{n}@uyut.example",
            {"subject": "Анна, вы забыли плед «Уют»", "text": "Плед ждёт вас в корзине: −15% до воскресенья.\n" * 10, "html": html},
            {"list_unsubscribe": [f"https://uyut.example/u/{n}", "mailto:unsubscribe@uyut.example"]},
        )
        for n in range(count)
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    """aiosmtpd's own command line with its Sink handler, which accepts every message."""
    server = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("aiosmtpd did not start")


def dkim_options(root: Path) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (root / "dkim.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return {"domain": "uyut.example", "selector": "bench", "private_key_file": "dkim.pem"}


def timed_send(options: dict, batch: list[OutgoingMessage], batch_size: int, root: Path) -> tuple[float, int]:
    """Seconds to send every message, and the connections opened."""
    sender = plugins.registry().channels["smtp"](Channel("email", "smtp", "email", 0.15, options), root)
    started = time.perf_counter()
    for start in range(0, len(batch), batch_size):
        results = sender.send(batch[start:start + batch_size])
        failed = [r for r in results if r.status != "sent"]
        if failed:
            raise SystemExit(f"{len(failed)} message(s) not sent, e.g. {failed[0]}")
    sender.close()
    return time.perf_counter() - started, sender.connections_opened


def build_only(options: dict, batch: list[OutgoingMessage], root: Path) -> float:
    sender = plugins.registry().channels["smtp"](Channel("email", "smtp", "email", 0.15, options), root)
    started = time.perf_counter()
    for message in batch:
        build_email(message, sender.settings.sender)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    batch = messages(args.messages)
    port = free_port()
    server = start_server(port)
    base = {"host": "127.0.0.1", "port": port, "security": "none", "from": "Uyut Home <news@uyut.example>"}
    modes = {
        "connection per message": {"max_messages_per_connection": 1},
        "reused, 100 per connection": {},
        "reused, one connection": {"max_messages_per_connection": 10**9},
        "one connection + DKIM": {"max_messages_per_connection": 10**9, "dkim": None},
    }
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    connections: dict[str, int] = {}
    building: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-smtp-") as tmp:
            root = Path(tmp)
            modes["one connection + DKIM"]["dkim"] = dkim_options(root)
            for _ in range(args.runs):
                for mode, extra in modes.items():  # interleaved, so drift hits every mode alike
                    seconds, connections[mode] = timed_send({**base, **extra}, batch, args.batch_size, root)
                    times[mode].append(seconds)
                building.append(build_only(base, batch, root))
    finally:
        server.terminate()
        server.wait(5)

    n = args.messages
    rates = {mode: n / statistics.median(ts) for mode, ts in times.items()}
    per_message, reused = rates["connection per message"], rates["reused, one connection"]
    print(f"{n:,} messages into a local aiosmtpd (own process), batches of {args.batch_size}, median of {args.runs} run(s)")
    print(f"{'mode':<28} {'msg/s':>8} {'connections':>12}")
    for mode, rate in rates.items():
        print(f"{mode:<28} {rate:>8,.0f} {connections[mode]:>12,}")
    print(f"{'build e-mails only':<28} {n / statistics.median(building):>8,.0f} {0:>12}")
    print(f"reuse vs connection per message: {reused / per_message:.2f}x")
    print(json.dumps({
        "messages": n, "batch_size": args.batch_size, "runs": args.runs,
        "msg_per_s": {mode: round(rate, 1) for mode, rate in rates.items()},
        "build_only_msg_per_s": round(n / statistics.median(building), 1),
        "connections": connections,
        "reuse_ratio": round(reused / per_message, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
