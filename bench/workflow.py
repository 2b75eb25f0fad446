"""Workflows end to end: a chord of N no-op members, against the same N plain tasks.

    .venv/bin/python -m bench.workflow --members 10000 --processes 2 --rounds 3

Starts a private redis-server (unless --redis-url) and ``fastq-supervisor bench.workflow:app``.
Each round, interleaved: (a) ``chord(group(noop.s(i) for i in range(N)), count.s()).enqueue()``
then ``result()`` - the time from the enqueue call to the callback's value; (b) the same N no-op
tasks with ``enqueue_many``, timed until the queue is empty (the plain drain, for scale); (c) a
chain of 200 steps (each step waits for the one before: a latency figure, steps/s). Prints
tasks/s with the single-connection PING rate of the same Redis beside them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import redis

import fastq
from bench._common import app_supervisor, ping_rate, stop_supervisor
from fastq import keys

app = fastq.App()  # the supervisor's copy reads FASTQ_REDIS_URL
QUEUE = "flow"


@app.task(name="bench:noop", queue=QUEUE)
async def noop(i: int) -> int:
    return i


@app.task(name="bench:count", queue=QUEUE)
async def count(xs: list[int]) -> int:
    return len(xs)


def _chord(n: int) -> float:
    t = time.perf_counter()
    ref = fastq.chord(fastq.group(noop.s(i) for i in range(n)), count.s()).enqueue()
    assert ref.result(timeout=300) == n
    return time.perf_counter() - t


def _plain(n: int, r: redis.Redis) -> float:
    t = time.perf_counter()
    noop.enqueue_many((i,) for i in range(n))
    while r.llen(keys.pending_key(QUEUE)) or r.llen(keys.active_key(QUEUE)):
        time.sleep(0.002)
    return time.perf_counter() - t


def _chain(n: int) -> float:
    t = time.perf_counter()
    ref = fastq.chain(noop.s(0), *[noop.s() for _ in range(n - 1)]).enqueue()
    assert ref.result(timeout=300) == 0
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--chain", type=int, default=200, help="steps of the chain")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--redis-url", default=None)
    args = p.parse_args()
    proc, server, url = app_supervisor("bench.workflow:app", QUEUE, args.processes, args.redis_url)
    r = redis.Redis.from_url(url)
    try:
        noop.enqueue(-1).result(timeout=30)  # the workers are up
        n = args.members
        chords, plains, chains = [], [], []
        for i in range(args.rounds):
            ping = ping_rate(url)
            chords.append(_chord(n))
            plains.append(_plain(n, r))
            chains.append(_chain(args.chain))
            print(f"round {i + 1}: chord {n / chords[-1]:>8,.0f} members/s   plain {n / plains[-1]:>8,.0f} tasks/s   "
                  f"chain {args.chain / chains[-1]:>6,.0f} steps/s   (PING {ping:,.0f}/s)")
        c, pl, ch = statistics.median(chords), statistics.median(plains), statistics.median(chains)
        print(f"median of {args.rounds}: chord of {n:,} end to end {c:.2f} s = {n / c:,.0f} members/s; "
              f"the same tasks plain {pl:.2f} s = {n / pl:,.0f} tasks/s (chord/plain {pl / c:.2f}x); "
              f"chain of {args.chain}: {args.chain / ch:,.0f} steps/s ({ch / args.chain * 1000:.2f} ms a step)")
        return 0
    finally:
        app.close()
        stop_supervisor(proc, server)


if __name__ == "__main__":
    sys.exit(main())
