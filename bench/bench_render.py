"""Benchmark: personalised e-mails rendered by MessageRenderer (MJML compiled
once per template, then Jinja per recipient) on ONE core, against compiling the
MJML per recipient (Jinja over the MJML, then mjml2html) measured in the same run.

    python bench/bench_render.py --recipients 100000 --baseline 500 --runs 3

Renders the example project's abandoned-cart e-mail (MJML + AMP parts, three
products, the text part derived from the HTML) for synthetic customers. Prints
e-mails per CPU-second of both (process time: the machine's cores are
shared, and wall time would count other processes on our core) as the median
of the runs, and their ratio. The issue's
target: >= 5,000 e-mails/s on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CAMPAIGNCTL_LOAD_PLUGINS", "duckdb,outbox,sqlite,offer_file")  # only what loading the project needs

from campaignctl.executor import message_context  # noqa: E402
from campaignctl.planner.plan import MessageAction  # noqa: E402
from campaignctl.project import load_project  # noqa: E402
from campaignctl.templates import MessageRenderer, environment  # noqa: E402

TARGET = 5_000  # e-mails/s on one core, from the issue
TEMPLATE = "cart_email"
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)
NAMES = ["Анна", "Ivan", "Мария", "Olga", "Дмитрий", "Sergey", "Елена", "<Tom & Jerry>", "Наталья", "Pavel"]


def contexts(project, count: int) -> list[dict]:
    """One template context per customer, as apply builds it (message_context)."""
    found = []
    for n in range(count):
        message = MessageAction(f"abandoned_cart/v1/{n}/1/2026-12-01", "abandoned_cart", "v1", n, 1, "email", TEMPLATE, None, 0.15, NOW)
        profile = {"customer_id": n, "first_name": NAMES[n % len(NAMES)], "email": f"c{n}@example.com", "loyalty_tier": "silver"}
        context = message_context(project, message, profile, NOW)
        context["products"] = [
            {"name": f"Plate {n % 97 + i}", "url": f"https://uyut.example/p/{n % 97 + i}", "image_url": f"https://static.uyut.example/p/{i}.png",
             "price": 390 + 10 * i}
            for i in range(3)
        ]
        found.append(context)
    return found


def compiled_once(project, batch: list[dict]) -> float:
    """CPU seconds to render every e-mail with MessageRenderer (a fresh one: its compile is counted)."""
    renderer = MessageRenderer(project)
    started = time.process_time()
    for context in batch:
        renderer.render(TEMPLATE, context)
    return time.process_time() - started


def compiled_per_recipient(project, batch: list[dict]) -> float:
    """CPU seconds for the naive pipeline: Jinja over the MJML source, then mjml2html, per recipient."""
    from mjml import mjml2html

    from campaignctl.templates import html_to_text

    template = project.templates[TEMPLATE]
    env = environment(False)
    mjml = environment(True).from_string(template.files["mjml"].read_text("utf-8"))  # escaped: "<Tom & Jerry>" must not break MJML
    amp = environment(True).from_string(template.files["amp"].read_text("utf-8"))
    subject, preheader = env.from_string(template.spec["subject"]), env.from_string(template.spec["preheader"])
    started = time.process_time()
    for context in batch:
        short = {"subject": subject.render(context), "preheader": preheader.render(context)}
        html = mjml2html(mjml.render({**context, **short}))
        amp.render({**context, **short})
        html_to_text(html)
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=500, help="recipients for the per-recipient baseline (it is slow)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=None, help="the core to pin to (default: the last one available)")
    args = parser.parse_args(argv)

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    project = load_project(ROOT / "campaigns")
    batch = contexts(project, args.recipients)
    MessageRenderer(project).render(TEMPLATE, batch[0])  # warm imports (mjml, css-inline); compile stays in the measurement
    once, naive = [], []
    for _ in range(args.runs):
        once.append(compiled_once(project, batch))
        naive.append(compiled_per_recipient(project, batch[: args.baseline]))
    once_rate = args.recipients / statistics.median(once)
    naive_rate = args.baseline / statistics.median(naive)
    print(f"{TEMPLATE}: MJML + AMP + text parts, pinned to CPU {cpu}, median of {args.runs} run(s)")
    print(f"compiled once, Jinja per recipient : {once_rate:>9,.0f} e-mails/s  ({args.recipients:,} in {statistics.median(once):.2f} s)")
    print(f"MJML compiled per recipient        : {naive_rate:>9,.0f} e-mails/s  ({args.baseline:,} in {statistics.median(naive):.2f} s)")
    print(f"speed-up                           : {once_rate / naive_rate:>9.1f} x")
    print(f"target {TARGET:,} e-mails/s on one core: {'met' if once_rate >= TARGET else 'NOT met'}")
    return 0 if once_rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
