"""Result latency: how long ``ref.result()`` takes for a no-op App task, end to end.

    .venv/bin/python -m bench.result_latency --tasks 2000 --processes 2

Starts a private redis-server (unless --redis-url) and ``fastq-supervisor bench.result_latency:app``,
then, one task at a time, enqueues a no-op App task and waits for its value with ``result()``;
also awaits many results at once from one process with ``aresult()``. Prints p50/p99/max of the
enqueue-to-result time, with the single-connection PING rate of the same Redis beside them (the
box's load shows in it). The sequential figure is the latency a request handler sees; the
concurrent one shows that waiters share one subscription.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import fastq
from bench._common import app_supervisor, ping_rate, stop_supervisor

app = fastq.App()  # the supervisor's copy reads FASTQ_REDIS_URL


@app.task(name="bench:echo", queue="latency")
async def echo(n: int) -> int:
    return n


def _percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms  max {ms[-1]:6.2f} ms"


def _sequential(n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        assert echo.enqueue(i).result(timeout=10) == i
        out.append(time.perf_counter() - t)
    return out


async def _concurrent(n: int, in_flight: int) -> tuple[float, list[float]]:
    gate = asyncio.Semaphore(in_flight)  # the App's async client has a bounded pool (redis-py: 100)

    async def one(i: int) -> float:
        async with gate:
            t = time.perf_counter()
            ref = await echo.aenqueue(i)
            assert await ref.aresult(timeout=30) == i
            return time.perf_counter() - t

    t0 = time.perf_counter()
    samples = await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    await app.aclose()
    return elapsed, list(samples)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000, help="sequential enqueue + result() round trips")
    p.add_argument("--concurrent", type=int, default=5000, help="tasks awaited with aresult() from one process")
    p.add_argument("--in-flight", type=int, default=64, help="of those, how many at once")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--redis-url", default=None)
    args = p.parse_args()
    proc, server, url = app_supervisor("bench.result_latency:app", "latency", args.processes, args.redis_url)
    try:
        echo.enqueue(-1).result(timeout=30)  # the workers are up
        ping = ping_rate(url)
        seq = _sequential(args.tasks)
        elapsed, conc = asyncio.run(_concurrent(args.concurrent, args.in_flight))
        ping_after = ping_rate(url)
        print(f"result latency, no-op App task, {args.processes} worker processes "
              f"(PING {ping:,.0f}/s before, {ping_after:,.0f}/s after):")
        print(f"  sequential  {args.tasks:>6,} x enqueue+result():   {_percentiles(seq)}")
        print(f"  concurrent  {args.concurrent:>6,} x aenqueue+aresult() ({args.in_flight} at once): "
              f"{_percentiles(conc)}  ({args.concurrent / elapsed:,.0f} results/s)")
        return 0
    finally:
        app.close()
        stop_supervisor(proc, server)


if __name__ == "__main__":
    sys.exit(main())
