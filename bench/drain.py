"""Drain benchmark: enqueue N no-op tasks, time fastq-supervisor draining them, print tasks/s.

    .venv/bin/python bench/drain.py --tasks 200000 --processes 2 --repeat 3

Uses a private redis-server (persistence off) unless --redis-url is given. Each run is the
fastq-demo flow: enqueue_many, then `fastq-supervisor fastq.demo:mux`; "drain" is measured from
the first completed task to the last, "wall" includes forking the workers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from fastq.demo import run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    args = p.parse_args()
    runs = []
    for _ in range(args.repeat):
        result: dict = {}
        if run(args.tasks, args.processes, args.concurrency, args.redis_url, result) != 0:
            return 1
        runs.append(result)
    drain = [r["drain_per_s"] for r in runs]
    enq = [r["enqueue_many_per_s"] for r in runs]
    print(f"\n{args.repeat} runs, {args.tasks:,} no-op tasks, {args.processes} processes x {args.concurrency}:")
    print(f"  drain        median {statistics.median(drain):>9,.0f} tasks/s  "
          f"(min {min(drain):,.0f}, max {max(drain):,.0f})")
    print(f"  enqueue_many median {statistics.median(enq):>9,.0f} tasks/s")
    if args.json:
        print(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
