"""``python -m bench.peers.run PEER enqueue|latency|worker ...`` inside PEER's venv.

* ``enqueue --n N [--kind sync|async]``: enqueue N no-op tasks with the peer's fastest client API;
  print JSON ``{"seconds": ..., "method": ...}`` (client creation is not timed, its first round trip
  is). ``--kind`` picks the no-op handler of that kind, for peers that list both in ``KINDS``.
* ``latency --samples S``: enqueue one latency task at a time, S times, with a random
  20-50 ms pause between calls; print JSON ``{"calls": [[t_call, t_return], ...]}``. The tasks
  push their start time onto ``bench:lat``; the driver pairs the two.
* ``worker``: run the peer's worker in this process, where the peer module provides one.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import random
import sys
import time


async def _maybe(value):
    return await value if inspect.isawaitable(value) else value


async def _enqueue(mod, n: int, kind: str = "") -> dict:
    client = await _maybe(mod.make_client())
    t0 = time.perf_counter()
    if kind:  # a no-op handler kind other than the peer's default (modules with KINDS)
        await _maybe(mod.enqueue_noops(client, n, kind=kind))
    else:
        await _maybe(mod.enqueue_noops(client, n))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "method": mod.ENQUEUE_METHOD}


async def _latency(mod, samples: int, low: float, high: float, seed: int) -> dict:
    client = await _maybe(mod.make_client())
    rng = random.Random(seed)
    is_async = inspect.iscoroutinefunction(mod.enqueue_record)
    calls = []
    for i in range(samples):
        t_call = time.time()
        if is_async:
            await mod.enqueue_record(client, i)
        else:
            mod.enqueue_record(client, i)
        calls.append([t_call, time.time()])
        await asyncio.sleep(rng.uniform(low, high))
    return {"calls": calls}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer")
    p.add_argument("command", choices=["enqueue", "latency", "worker"])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--min-gap", type=float, default=0.020)
    p.add_argument("--max-gap", type=float, default=0.050)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kind", default="", help="enqueue: the no-op handler kind (async or sync), for peers with KINDS")
    args = p.parse_args(argv)
    mod = importlib.import_module(f"bench.peers.peer_{args.peer}")
    if args.command == "worker":
        mod.worker()
        return 0
    if args.command == "enqueue":
        out = asyncio.run(_enqueue(mod, args.n, args.kind))
    else:
        out = asyncio.run(_latency(mod, args.samples, args.min_gap, args.max_gap, args.seed))
    sys.stdout.write("\nRESULT " + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
