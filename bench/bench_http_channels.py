"""Benchmark: an HTTP channel (fcm) sending with bounded concurrency into a
local server, against the same channel sending one message at a time, in the
same run.

    python bench/bench_http_channels.py --messages 20000 --concurrency 64 --latency-ms 10 --runs 3

The server is an asyncio process of its own (so it does not share the
client's interpreter lock) that answers FCM's token endpoint and
``messages:send`` after ``--latency-ms`` (a provider's round trip; 0 measures
the client alone) and counts what it accepted. Prints, as the median of the
runs: messages/s of both ways and their ratio. The issue's target: >= 2,000
messages/s with bounded concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CAMPAIGNCTL_LOAD_PLUGINS", "fcm")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from campaignctl.contracts import OutgoingMessage  # noqa: E402
from campaignctl.model import Channel  # noqa: E402
from campaignctl.plugins import registry  # noqa: E402

TARGET = 2_000  # messages/s, from the issue

SERVER = r'''
import asyncio, json, sys
latency = float(sys.argv[1])
accepted = 0
TOKEN = json.dumps({"access_token": "ya29.bench", "expires_in": 3600}).encode()

def response(body):
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

async def handle(reader, writer):
    global accepted
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head.startswith(b"POST /token"):
                writer.write(response(TOKEN))
                continue
            if head.startswith(b"GET /count"):
                writer.write(response(str(accepted).encode()))
                continue
            if latency:
                await asyncio.sleep(latency)
            accepted += 1
            writer.write(response(b'{"name": "projects/bench/messages/%d"}' % accepted))
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


def messages(count: int) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(f"cart/v2/{n}/0/20261124T0900Z", "abandoned_cart", str(n), "push", f"fcm-token-{n:08d}",
                        {"title": "Your cart is waiting", "body": "10% off until Sunday", "url": f"https://uyut.example/cart?n={n}"})
        for n in range(count)
    ]


def service_account(root: Path, base_url: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = root / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "bench", "private_key": pem,
                                "client_email": "bench@bench.iam.gserviceaccount.com", "token_uri": f"{base_url}/token"}))
    return path


def timed_send(options: dict, root: Path, batch: list[OutgoingMessage], batch_size: int) -> float:
    """Seconds for the fcm channel to send every message, in batches as deliver() hands them over."""
    sender = registry().channels["fcm"](Channel("push", "fcm", "push", 0.0, options), root)
    sender.send(batch[:1])  # the OAuth exchange and first connection are not what is measured
    started = time.perf_counter()
    for start in range(0, len(batch), batch_size):
        results = sender.send(batch[start:start + batch_size])
        assert all(r.status == "sent" for r in results), results[0]
    elapsed = time.perf_counter() - started
    sender.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sequential-messages", type=int, default=0, help="for one-at-a-time (default: --messages, at most 2,000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.latency_ms / 1000)], stdout=subprocess.PIPE, text=True)
    try:
        base_url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
            root = Path(tmp)
            options = {"service_account": str(service_account(root, base_url)), "base_url": base_url, "timeout": 30}
            batch = messages(args.messages)
            one_by_one = batch[: args.sequential_messages or min(args.messages, 2_000)]
            concurrent, sequential = [], []
            for _ in range(args.runs):
                concurrent.append(len(batch) / timed_send({**options, "concurrency": args.concurrency}, root, batch, args.batch_size))
                sequential.append(len(one_by_one) / timed_send({**options, "concurrency": 1}, root, one_by_one, args.batch_size))
    finally:
        server.kill()
        server.wait()
    rate, alone = statistics.median(concurrent), statistics.median(sequential)
    print(f"fcm channel, {args.latency_ms:g} ms server latency, batches of {args.batch_size}, median of {args.runs} run(s)")
    print(f"concurrency {args.concurrency:<4}: {rate:>10,.0f} msg/s  ({args.messages:,} messages)")
    print(f"one at a time   : {alone:>10,.0f} msg/s  ({len(one_by_one):,} messages)")
    print(f"ratio           : {rate / alone:>10.1f} x")
    print(f"target {TARGET:,} msg/s: {'met' if rate >= TARGET else 'NOT met'}")
    return 0 if rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
