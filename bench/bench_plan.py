"""Benchmark: planning the example project against evaluating its segments alone
(issue 4's bound: plan <= 1.5 x segments), on demo data, in one process,
alternating the two.

    python bench/bench_plan.py --customers 100000 --runs 3 [--data DIR]

Prints the medians, the ratio, and where plan time goes as compute_plan
spends it: the segments query that also reads the customer facts, what is
left of the facts (the trigger events query, keeping the wanted customers'
rows), the planner itself. "Segments alone" is the plain segments query.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from campaignctl.connect import open_data_source
from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import needed_segments
from campaignctl.facts import FACT_COLUMNS, facts_from_audiences
from campaignctl.planner import StateSnapshot, plan
from campaignctl.project import load_project
from campaignctl.segments import evaluate_segments

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


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
                t_segments, audiences = timed(evaluate_segments, project, source, names, now=NOW, columns=FACT_COLUMNS)
                ids = sorted({int(i) for members in audiences.members.values() for i in members})
                t_facts, facts = timed(facts_from_audiences, project, source, audiences, ids, NOW)
                t_plan, _ = timed(plan, project, audiences, StateSnapshot(), NOW, facts)
                planning.append(t_segments + t_facts + t_plan)
                parts.append({"segments_with_facts": t_segments, "rest_of_facts": t_facts, "planner": t_plan})
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
