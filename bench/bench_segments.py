"""Evaluate every segment of the example project three ways and compare (issue 3).

    nice .venv/bin/python bench/bench_segments.py --customers 1000000 --data /tmp/demo1m --runs 3

(a) ``evaluate_segments`` on the DuckDB source: the compiled query;
(b) bench/segments_handwritten.sql: one DuckDB query written by hand;
(c) bench/segments_pandas.py: the same in pandas.

Each run of each way is a fresh subprocess (so peak RSS is its own, imports
included), the ways alternate within a run, and every run's memberships are
checked equal, segment by segment, before any figure is reported. Prints JSON
and a Markdown table for docs/benchmarks.md.

Data: ``--data DIR`` is reused when it holds demo data generated with
``as_of`` = AS_OF below (the bench generates it there otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EXAMPLE_PROJECT = REPO / "campaigns"
AS_OF = datetime(2026, 12, 15, 12, tzinfo=timezone.utc)  # the data's "now" and the evaluation's
WAYS = ("compiled", "handwritten", "pandas")


# --- one way, in a child process ------------------------------------------------------


def members_compiled(project_dir: Path) -> dict[str, np.ndarray]:
    from campaignctl_duckdb import DuckDBSource

    from campaignctl.project import load_project
    from campaignctl.segments import evaluate_segments

    project = load_project(project_dir)
    source = DuckDBSource.from_config(project.data_source, project.root)
    return dict(evaluate_segments(project, source, now=AS_OF).members)


def members_handwritten(project_dir: Path) -> dict[str, np.ndarray]:
    from campaignctl_duckdb import DuckDBSource

    from campaignctl.project import load_project

    project = load_project(project_dir)
    source = DuckDBSource.from_config(project.data_source, project.root)  # the same views over the same files
    local = AS_OF.astimezone(ZoneInfo(project.timezone))
    sql = (BENCH / "segments_handwritten.sql").read_text().format(
        now=AS_OF.isoformat(sep=" "), today=local.date().isoformat(),
        this_year=local.replace(month=1, day=1, hour=0, minute=0, second=0).isoformat(sep=" "),
        last_year=local.replace(year=local.year - 1, month=1, day=1, hour=0, minute=0, second=0).isoformat(sep=" "))
    table = source.query(sql)
    ids = table.column("customer_id").to_numpy()
    return {name: np.sort(ids[table.column(name).to_numpy(zero_copy_only=False)]) for name in table.column_names if name != "customer_id"}


def members_pandas(project_dir: Path) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(BENCH))
    from segments_pandas import evaluate

    from campaignctl.project import load_project

    project = load_project(project_dir)
    local = AS_OF.astimezone(ZoneInfo(project.timezone))
    year_start = local.replace(month=1, day=1, hour=0, minute=0, second=0)
    data = project.root / project.data_source.options["path"]
    return evaluate(data, AS_OF, local.date(), year_start, year_start.replace(year=local.year - 1))


def child(way: str, project_dir: Path, out: Path) -> None:
    run = {"compiled": members_compiled, "handwritten": members_handwritten, "pandas": members_pandas}[way]
    started, cpu_started = time.perf_counter(), time.process_time()
    members = run(project_dir)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    np.savez(out, **members)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak}))


# --- the parent -----------------------------------------------------------------------


def prepare_data(directory: Path | None, customers: int, scratch: Path) -> Path:
    data = directory or scratch / "data"
    if (data / "orders").is_dir():
        return data
    from campaignctl.demo_data import generate_demo_data

    print(f"generating demo data for {customers:,} customers in {data} ...", file=sys.stderr)
    generate_demo_data(data, customers, seed=0, as_of=AS_OF)
    return data


def copy_project(data: Path, scratch: Path) -> Path:
    """The example project with its data source pointed at ``data``."""
    project = scratch / "project"
    shutil.copytree(EXAMPLE_PROJECT, project, ignore=shutil.ignore_patterns("data", "out", ".campaignctl"))
    project_file = project / "campaignctl.yaml"
    text = project_file.read_text()
    assert "options: {path: data}" in text, "the example project's data source changed; update the bench"
    project_file.write_text(text.replace("options: {path: data}", f"options: {{path: {json.dumps(str(data.resolve()))}}}"))
    return project


def table_rows(data: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    rows = {}
    for table in ("customers", "orders", "order_lines", "events", "consents"):
        files = sorted((data / table).glob("*.parquet")) if (data / table).is_dir() else [data / f"{table}.parquet"]
        rows[table] = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    return rows


def differences(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Segment -> (members only in reference, members only in other), for segments that differ."""
    found = {}
    for name in reference.keys() | other.keys():
        mine, theirs = reference.get(name, np.array([], dtype=np.int64)), other.get(name, np.array([], dtype=np.int64))
        if not np.array_equal(mine, theirs):
            found[name] = (len(np.setdiff1d(mine, theirs)), len(np.setdiff1d(theirs, mine)))
    return found


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def markdown(report: dict) -> str:
    t = report["seconds_median"]
    rss = report["peak_rss_mb_max"]
    lines = [
        f"Measured {report['date']} on {report['machine']}; DuckDB {report['duckdb']}, pandas {report['pandas']}, Python {report['python']}.",
        f"Data: {', '.join(f'{n:,} {table}' for table, n in report['rows'].items())} (demo data, seed 0, as_of {AS_OF.isoformat()}).",
        f"Command: `{report['command']}`",
        "",
        "| way | median wall (s) | runs (s) | median CPU, user + system (s) | peak RSS (MiB) |",
        "|---|---:|---|---:|---:|",
    ]
    for way in WAYS:
        runs = ", ".join(f"{s:.1f}" for s in report["seconds"][way])
        lines.append(f"| {way} | {t[way]:.1f} | {runs} | {report['cpu_seconds_median'][way]:.1f} | {rss[way]:,.0f} |")
    lines += [
        "",
        f"compiled / hand-written = **{report['compiled_vs_handwritten']:.2f}x** (target at most 1.3x); "
        f"pandas / compiled = **{report['pandas_vs_compiled']:.1f}x** (target at least 4x); "
        f"compiled peak RSS **{rss['compiled']:,.0f} MiB** (target under 1.5 GB = 1,430 MiB). "
        f"Memberships equal in every run: {report['memberships_equal']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to generate when --data holds no data")
    parser.add_argument("--data", type=Path, help="demo data directory (reused if it holds data, generated there otherwise)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated subset of: " + ", ".join(WAYS))
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.project, args.out)
        return

    ways = [way for way in WAYS if way in args.ways.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-segments-") as scratch_name:
        scratch = Path(scratch_name)
        data = prepare_data(args.data, args.customers, scratch)
        project = copy_project(data, scratch)
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        cpu_seconds: dict[str, list[float]] = {way: [] for way in ways}  # user + system: what the machine's load does not change
        peaks: dict[str, list[float]] = {way: [] for way in ways}
        mismatches: list[str] = []
        for run in range(1, args.runs + 1):
            members = {}
            for way in ways:  # alternating, so load from others on the machine hits every way alike
                out = scratch / f"{way}.npz"
                done = subprocess.run([sys.executable, __file__, "--child", way, "--project", str(project), "--out", str(out)],
                                      capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{way} failed:\n{done.stderr}")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                seconds[way].append(figures["seconds"])
                cpu_seconds[way].append(figures["cpu_seconds"])
                peaks[way].append(figures["peak_rss_mb"])
                with np.load(out) as saved:
                    members[way] = {name: saved[name] for name in saved.files}
                print(f"run {run} {way:<12} {figures['seconds']:7.1f} s  CPU {figures['cpu_seconds']:7.1f} s  peak RSS {figures['peak_rss_mb']:6,.0f} MiB", file=sys.stderr)
            for way in ways[1:]:
                differing = differences(members[ways[0]], members[way])
                if differing:
                    mismatches.append(f"run {run}: {way} differs from {ways[0]} (only in {ways[0]}, only in {way}): {differing}")
        rows = table_rows(data)

    import duckdb
    import pandas

    median = {way: statistics.median(values) for way, values in seconds.items()}
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "duckdb": duckdb.__version__, "pandas": pandas.__version__, "python": platform.python_version(),
        "rows": rows,
        "command": " ".join(["nice", ".venv/bin/python", "bench/bench_segments.py", *sys.argv[1:]]),
        "runs": args.runs,
        "seconds": seconds,
        "seconds_median": median,
        "cpu_seconds": cpu_seconds,
        "cpu_seconds_median": {way: statistics.median(values) for way, values in cpu_seconds.items()},
        "peak_rss_mb": peaks,
        "peak_rss_mb_max": {way: max(values) for way, values in peaks.items()},
        "memberships_equal": not mismatches,
        "mismatches": mismatches,
    }
    if "compiled" in median and "handwritten" in median:
        report["compiled_vs_handwritten"] = median["compiled"] / median["handwritten"]
    if "compiled" in median and "pandas" in median:
        report["pandas_vs_compiled"] = median["pandas"] / median["compiled"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if set(ways) == set(WAYS):
        print()
        print(markdown(report))
    if mismatches:
        sys.exit("memberships differ:\n" + "\n".join(mismatches))


if __name__ == "__main__":
    main()
