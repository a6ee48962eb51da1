"""Benchmark: planning the example project as `campaignctl plan` does against
evaluating its segments alone (issue 4's bound: plan <= 1.5 x segments), on
demo data, in one process, alternating the two.

    python bench/bench_plan.py --customers 100000 --runs 3 [--data DIR]

The plan is executor.compute_plan with an empty state, the function the CLI
calls: the segments query that also reads the customer facts, the trigger
events, the order history of the offers' audiences, SMS parts on a sample,
the planner (with the offer forecast) and the template check. Prints the
medians, the ratio, and each phase's median as compute_plan reports its
progress.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from campaignctl.connect import open_data_source
from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import compute_plan, needed_segments
from campaignctl.planner import StateSnapshot
from campaignctl.project import load_project
from campaignctl.segments import evaluate_segments

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def timed_plan(project, source) -> tuple[float, dict[str, float]]:
    """compute_plan's seconds, in all and per phase (from one progress message to the next)."""
    marks: list[tuple[float, str]] = []

    def progress(message: str) -> None:
        marks.append((time.perf_counter(), re.sub(r"\d[\d,]* ", "", message)))  # "keeping facts of 1,000 customers" -> one name

    start = time.perf_counter()
    compute_plan(project, source, StateSnapshot(), NOW, progress)
    end = time.perf_counter()
    phases: dict[str, float] = {}
    for (at, phase), (until, _) in zip(marks, marks[1:] + [(end, "")]):
        phases[phase] = phases.get(phase, 0.0) + until - at
    return end - start, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, help="reuse demo data generated as of 2026-12-01T07:30Z")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl"))
        data = args.data or Path(tmp) / "data"
        if not args.data:
            generate_demo_data(data, args.customers, seed=7, as_of=NOW)
        (root / "data").symlink_to(data.resolve(), target_is_directory=True)
        project = load_project(root)
        source = open_data_source(project)
        names = needed_segments(project)
        segments_only, planning, parts = [], [], []
        try:
            for _ in range(args.runs):
                seconds, _ = timed(evaluate_segments, project, source, names, now=NOW)
                segments_only.append(seconds)
                seconds, phases = timed_plan(project, source)
                planning.append(seconds)
                parts.append(phases)
        finally:
            source.close()
    median_parts = {key: round(statistics.median(p[key] for p in parts), 2) for key in parts[0]}
    report = {
        "customers": args.customers,
        "segments_only_median_s": round(statistics.median(segments_only), 2),
        "plan_median_s": round(statistics.median(planning), 2),
        "plan_parts_median_s": median_parts,
        "ratio": round(statistics.median(planning) / statistics.median(segments_only), 2),
        "bound": 1.5,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
