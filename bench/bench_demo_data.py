"""Time `generate_demo_data` and report its peak memory (figures for docs/benchmarks.md).

    .venv/bin/python bench/bench_demo_data.py --customers 1000000

Peak RSS is the whole process's (resource.getrusage), imports included: run one
size per process for a clean figure.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from campaignctl.demo_data import CHUNK_CUSTOMERS, generate_demo_data

AS_OF = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)  # fixed, so runs are comparable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-customers", type=int, default=CHUNK_CUSTOMERS)
    parser.add_argument("--out", type=Path, help="keep the data here instead of a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="demo-data-") as scratch:
        out = args.out or Path(scratch)
        started = time.perf_counter()
        summary = generate_demo_data(out, args.customers, seed=args.seed, as_of=AS_OF,
                                     chunk_customers=args.chunk_customers)
        seconds = time.perf_counter() - started
        size_mb = sum(path.stat().st_size for path in out.rglob("*.parquet")) / 2**20

    rows = sum(summary.rows().values())
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"customers      {args.customers:,} (chunks of {args.chunk_customers:,})")
    for table, count in summary.rows().items():
        print(f"  {table:<12} {count:>14,}")
    print(f"rows           {rows:,}")
    print(f"seconds        {seconds:.1f}")
    print(f"rows/s         {rows / seconds:,.0f}")
    print(f"customers/s    {args.customers / seconds:,.0f}")
    print(f"parquet size   {size_mb:,.0f} MiB")
    print(f"peak RSS       {peak_rss_mb:,.0f} MiB")
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
