"""Benchmark: `campaignctl validate` on a generated project of N campaigns, each
with its own segment, offer, e-mail (MJML) and SMS templates, spread over one
file per campaign as a large team would keep them.

    python bench/bench_validate.py --campaigns 500 --runs 5

Prints the median wall time of the whole command (process start to exit) and
of the in-process library call, and the files/definitions it checked.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = """\
version: 1
name: bench
timezone: Europe/Moscow
currency: RUB
data_source:
  plugin: duckdb
  options: {path: data}
channels:
  email: {plugin: outbox, kind: email, cost: 0.15, options: {path: out/email.jsonl}}
  sms: {plugin: outbox, kind: sms, cost: 2.9, options: {path: out/sms.jsonl}}
  push: {plugin: outbox, kind: push, cost: 0.05, options: {path: out/push.jsonl}}
policies:
  global_holdout: 0.05
  quiet_hours: {start: "21:00", end: "09:00"}
  frequency_caps: [{channel: any, max: 3, per: 7d}]
"""

SHARED = """\
version: 1
features:
  rfm:
    kind: rfm
    period: {last: 365d}
    recency: {quantiles: 5}
    frequency: {quantiles: 5}
    monetary: {quantiles: 5}
    groups:
      champions: {r: [4, 5], f: [4, 5], m: [4, 5]}
      at_risk: {r: [1, 2], f: [3, 4, 5]}
    fallback: others
segments:
  has_email:
    where: {reachable: email}
cascades:
  cheap_first:
    goal: {order_within: 7d}
    steps:
      - channel: cheapest
        templates: {email: shared_email, push: shared_push}
      - wait: 1d
        if: not_opened
        channel: sms
        template: shared_sms
templates:
  shared_email: {channel: email, subject: "Hello {{ customer.first_name }}", mjml: templates/shared.mjml}
  shared_push: {channel: push, title: "Hi", body: "{{ customer.first_name }}, a gift for you"}
  shared_sms: {channel: sms, body: "{{ customer.first_name }}, your code {{ offer.promo_code }}"}
"""

CAMPAIGN = """\
version: 1
segments:
  audience_{i}:
    description: Generated audience {i}
    where:
      all:
        - segment: has_email
        - orders: {{metric: count, period: {{last: 365d}}, channel: offline, gte: {count}}}
        - orders: {{metric: days_since_last, gt: {days}}}
        - feature: {{name: rfm, in: [champions, at_risk]}}
        - not: {{orders: {{metric: count, period: {{last: 60d}}, gte: 1}}}}
offers:
  offer_{i}:
    kind: fixed_discount
    amount: {amount}
    min_check: {min_check}
    valid: {{days: 14}}
templates:
  email_{i}:
    channel: email
    subject: "{{{{ customer.first_name }}}}, {amount} RUB off"
    mjml: templates/email_{i}.mjml
  sms_{i}:
    channel: sms
    body: "{{{{ customer.first_name }}}}, {amount} RUB off from {min_check}: {{{{ offer.promo_code }}}}"
campaigns:
  campaign_{i}:
    description: Generated campaign {i}
    kind: broadcast
    audience: audience_{i}
    schedule: {{at: "2026-12-01T10:00"}}
    message: {{channel: email, template: email_{i}}}
    offer: offer_{i}
    control: 0.1
"""

MJML = """\
<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello {{{{ customer.first_name }}}}, {amount} RUB off your next order from {min_check} RUB.</mj-text>
        <mj-button href="{{{{ links.shop }}}}">Shop now</mj-button>
        <mj-text font-size="11px"><a href="{{{{ links.unsubscribe }}}}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


def generate(root: Path, campaigns: int) -> None:
    (root / "campaigns").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "campaignctl.yaml").write_text(PROJECT)
    (root / "shared.yaml").write_text(SHARED)
    (root / "templates" / "shared.mjml").write_text(MJML.format(amount=100, min_check=1000))
    for i in range(campaigns):
        values = {"i": i, "count": 1 + i % 3, "days": 60 + i % 120, "amount": 100 + 50 * (i % 10), "min_check": 1000 + 500 * (i % 8)}
        (root / "campaigns" / f"campaign_{i:04d}.yaml").write_text(CAMPAIGN.format(**values))
        (root / "templates" / f"email_{i}.mjml").write_text(MJML.format(**values))


def time_command(root: Path, runs: int) -> list[float]:
    command = [sys.executable, "-m", "campaignctl", "-C", str(root), "validate", "--format", "json"]
    times = []
    for _ in range(runs + 1):  # the first run warms the page cache and is not counted
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"validate failed:\n{done.stdout}\n{done.stderr}")
    return times[1:]


def time_library(root: Path, runs: int) -> tuple[list[float], dict]:
    from campaignctl.project import check_project

    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = check_project(root)
        times.append(time.perf_counter() - start)
    assert result is not None and result.ok, [str(d) for d in result.diagnostics][:5]
    counts = {kind: len(getattr(result.project, kind)) for kind in ("campaigns", "segments", "offers", "templates")}
    return times, {"files": len(result.files), **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        generate(root, args.campaigns)
        command_times = time_command(root, args.runs)
        library_times, counts = time_library(root, args.runs)
    report = {
        "campaigns": args.campaigns,
        "checked": counts,
        "command_median_s": round(statistics.median(command_times), 3),
        "command_min_s": round(min(command_times), 3),
        "command_max_s": round(max(command_times), 3),
        "library_median_s": round(statistics.median(library_times), 3),
        "limit_s": 2.0,
    }
    report["within_limit"] = report["command_median_s"] < report["limit_s"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
