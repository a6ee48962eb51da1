"""Benchmark: the full `campaignctl report` (incrementality with CUPED, funnel,
economics, global-holdout view, RFM migration, cohorts, ARPU/LTV, weekday mix)
for 1M customers / ~20M orders; the target is under 30 s.

    python bench/bench_report.py [--data DIR] [--customers 1000000] [--runs 3]

Demo data is generated once into --data when absent (a few minutes at 1M).
The state is synthesised straight into a SQLite state store: every customer
enrolled in one campaign (a 10% control, two arms, the 5% global holdout),
an e-mail to every treated customer and an SMS to a third of them, delivered
and opened outcomes, entries spread over the two weeks before as_of - 7 days.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from campaignctl_sqlite import SqliteStateStore  # noqa: E402
from report_world import ARMS, CAMPAIGN, CONFIG, DOCUMENT, MJML  # noqa: E402  (the same small project the tests use)

from campaignctl.demo_data import generate_demo_data  # noqa: E402
from campaignctl.planner.hashing import arms_of, groups_of  # noqa: E402
from campaignctl.project import load_project  # noqa: E402
from campaignctl.report import ReportOptions, render_html, render_text, report  # noqa: E402

DEFAULT_DATA = Path("/tmp/seg3/demo1m")  # as_of 2026-12-15T12:00Z, when present
AS_OF = datetime(2026, 12, 15, 12, 0, tzinfo=timezone.utc)


def ensure_data(path: Path, customers: int) -> Path:
    if not (path / "customers.parquet").exists():
        print(f"generating {customers:,} customers into {path} ...", flush=True)
        generate_demo_data(path, customers, seed=7, as_of=AS_OF)
    return path


def ensure_project(work: Path, data: Path) -> Path:
    root = work / "project"
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "campaignctl.yaml").write_text(CONFIG)
    (root / "project.yaml").write_text(DOCUMENT)
    (root / "templates" / "hello.mjml").write_text(MJML)
    if not (root / "data").exists():
        (root / "data").symlink_to(data, target_is_directory=True)
    return root


def synthesise_state(root: Path) -> Path:
    """Enrollments, ledger rows and outcomes written with executemany into the
    tables the SQLite store migrated (the store API is for apply's batches)."""
    path = root / ".campaignctl" / "state.db"
    if path.exists():
        return path
    SqliteStateStore(path).close()  # creates and migrates the schema
    project = load_project(root)
    ids = pq.read_table(root / "data" / "customers.parquet", columns=["customer_id"]).column("customer_id").to_numpy()
    groups = groups_of(project.name, CAMPAIGN, ids, holdout=project.policies.global_holdout, control=0.1)
    treated = groups == "treatment"
    arms = np.full(len(ids), None, dtype=object)
    arms[treated] = arms_of(project.name, CAMPAIGN, ids[treated], ARMS)
    rng = np.random.default_rng(1)
    start = AS_OF - timedelta(days=21)
    entered = [start + timedelta(seconds=int(s)) for s in rng.integers(0, 14 * 86400, len(ids))]
    iso = [e.isoformat() for e in entered]
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO enrollments (campaign, customer_id, version, grp, arm, step, status, entered_at) VALUES (?, ?, 'v1', ?, ?, 1, 'active', ?)",
            zip([CAMPAIGN] * len(ids), map(str, ids.tolist()), groups.tolist(), arms.tolist(), iso))
        rows, outcomes = [], []
        for c, at in zip(ids[treated].tolist(), np.asarray(iso, dtype=object)[treated].tolist()):
            for step, channel, cost in ((0, "email", 0.15), (1, "sms", 2.9)):
                if step == 1 and c % 3:
                    continue
                key = f"{CAMPAIGN}/v1/{c}/{step}/w"
                rows.append((key, CAMPAIGN, str(c), channel, step, "sent", 1, f"p{c}", cost, at, at, None, "{}"))
                outcomes.append((key, "delivered", at, "{}"))
                if c % 10 < 3:
                    outcomes.append((key, "opened", at, "{}"))
        db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO outcomes VALUES (?, ?, ?, ?)", outcomes)
    print(f"state: {len(ids):,} enrollments, {len(rows):,} messages, {len(outcomes):,} outcomes", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/campaignctl-bench-report"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = ensure_data(args.data, args.customers)
    root = ensure_project(args.work, data)
    synthesise_state(root)
    project = load_project(root)
    orders = sum(pq.read_metadata(p).num_rows for p in (data / "orders").glob("*.parquet"))
    print(f"{orders:,} orders", flush=True)
    times, timings = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = report(project, AS_OF, ReportOptions())
        render_text(result)
        (args.work / "report.html").write_text(render_html(result))
        times.append(time.perf_counter() - started)
        timings.append(result.timings)
    median = statistics.median(times)
    print(json.dumps({"runs": [round(t, 2) for t in times], "median_s": round(median, 2),
                      # an even count's median is between two runs: show the parts of the nearer one
                      "parts_s": {k: round(v, 2) for k, v in timings[min(range(len(times)), key=lambda i: abs(times[i] - median))].items()}},
                     indent=2))
    print(("OK" if median < 30 else "SLOW") + f": the full report in {median:.1f} s (target < 30 s)")


if __name__ == "__main__":
    main()
