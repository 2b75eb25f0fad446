"""Limits overhead: drain throughput of one no-op task type, unlimited vs rate-limited (and
concurrency-limited) far above what the box can do, interleaved in the same run.

    .venv/bin/python -m bench.limits --tasks 50000 --repeat 3

Each round: enqueue N "bench:noop" tasks, start ``fastq-supervisor bench._limits_app:<app>``
(``plain``: no limits; ``rated``: ``rate_limit="1000000/s"``; ``slotted``:
``concurrency_limit=100000``), measure the drain from the first processed task to the last, stop.
The variants alternate (plain, rated, slotted, plain, ...) so that the box's load drifts alike for
all; the single-connection PING rate is measured before each round and printed beside it, and so
are the workers' and Redis's CPU time per task over the drain (steadier than throughput on a shared
box). A private redis-server unless --redis-url is given. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import psutil
import redis

import fastq
from bench._common import ping_rate
from fastq import keys

QUEUE = "bench-limits"
REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"plain": "unlimited", "rated": "rate_limit 1,000,000/s", "slotted": "concurrency_limit 100,000"}


def _cpu(proc: subprocess.Popen[str]) -> float:
    """CPU seconds used so far by the supervisor's worker processes."""
    total = 0.0
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def _redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def drain(url: str, app: str, tasks: int, processes: int, concurrency: int) -> Optional[tuple[float, float, float]]:
    """(tasks/s of one drain, from the first processed task to the last; worker CPU µs per task and
    Redis CPU µs per task over that span), or None when it failed."""
    r = redis.Redis.from_url(url)
    r.flushall()
    client = fastq.Client(url)
    try:
        client.enqueue_many([fastq.Task("bench:noop", b"{}")] * tasks, queue=QUEUE)
    finally:
        client.close()
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", f"bench._limits_app:{app}", "--redis-url", url,
           "--processes", str(processes), "--concurrency", str(concurrency), "--queues", QUEUE,
           "--log-level", "WARNING"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    key = keys.processed_total_key(QUEUE)
    first = None
    start = time.perf_counter()
    cpu0 = redis0 = 0.0
    try:
        while True:
            done = int(r.get(key) or 0)
            now = time.perf_counter()
            if first is None and done:
                first = now
                cpu0, redis0 = _cpu(proc), _redis_cpu(r)
            if done >= tasks:
                cpu, rcpu = _cpu(proc) - cpu0, _redis_cpu(r) - redis0
                return tasks / (now - (first or start)), cpu / tasks * 1e6, rcpu / tasks * 1e6
            if proc.poll() is not None or now - start > 300:
                print(f"  {app}: supervisor ended or timed out at {done:,} of {tasks:,}", file=sys.stderr)
                return None
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        if "Traceback" in err:
            print(err[-2000:], file=sys.stderr)
        r.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=50_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--variants", default="plain,rated,slotted", help="comma-separated: plain, rated, slotted")
    p.add_argument("--redis-url", default=None)
    args = p.parse_args()
    server = None
    url = args.redis_url
    if url is None:
        from fastq.devserver import DevServer

        server = DevServer().start()
        url = server.url
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    pings: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    rcpus: dict[str, list[float]] = {v: [] for v in variants}
    print(f"{args.tasks:,} no-op tasks per round, {args.processes} processes x {args.concurrency}; codec "
          f"{'Cython' if fastq.USING_SPEEDUPS else 'pure Python'}")
    try:
        for round_ in range(1, args.repeat + 1):
            for v in variants:
                ping = ping_rate(url)
                result = drain(url, v, args.tasks, args.processes, args.concurrency)
                if result is None:
                    return 1
                rate, cpu, rcpu = result
                rates[v].append(rate)
                pings[v].append(ping)
                cpus[v].append(cpu)
                rcpus[v].append(rcpu)
                print(f"  round {round_} {VARIANTS[v]:<26} {rate:>9,.0f} tasks/s   worker CPU {cpu:5.1f} µs/task, "
                      f"Redis CPU {rcpu:5.1f} µs/task   (PING {ping:,.0f}/s before)")
    finally:
        if server is not None:
            server.stop()
    base = statistics.median(rates["plain"]) if "plain" in rates else None
    base_cpu = statistics.median(cpus["plain"]) + statistics.median(rcpus["plain"]) if "plain" in rates else None
    print("\nmedians (overhead: throughput lost, and CPU per task added, worker + Redis, against unlimited):")
    for v in variants:
        med = statistics.median(rates[v])
        cpu = statistics.median(cpus[v]) + statistics.median(rcpus[v])
        extra = ""
        if base and base_cpu and v != "plain":
            extra = (f"  overhead {100 * (1 - med / base):.1f} % throughput, "
                     f"{100 * (cpu / base_cpu - 1):+.1f} % CPU/task")
        print(f"  {VARIANTS[v]:<26} {med:>9,.0f} tasks/s  {cpu:5.1f} µs CPU/task  "
              f"PING {statistics.median(pings[v]):,.0f}/s{extra}")
    if "plain" in rates:  # each round against the unlimited drain just before it: less exposed to drifting load
        for v in variants:
            if v == "plain":
                continue
            paired = [100 * (1 - x / b) for x, b in zip(rates[v], rates["plain"], strict=True)]
            added = [c + rc - b - rb for c, rc, b, rb in zip(cpus[v], rcpus[v], cpus["plain"], rcpus["plain"],
                                                             strict=True)]
            print(f"  {VARIANTS[v]}: per-round throughput overhead {', '.join(f'{x:.0f} %' for x in paired)} "
                  f"(median {statistics.median(paired):.1f} %); CPU added per task, median "
                  f"{statistics.median(added):.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
