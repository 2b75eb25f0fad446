"""Memory of ``fastq-supervisor`` and its worker processes: RSS, USS and PSS, idle and after a drain.

    .venv/bin/python -m bench.memory --tasks 100000 --processes 2
    .venv/bin/python -m bench.memory --modules          # what a worker imports, heaviest first

Starts a private redis-server (persistence off) unless --redis-url is given, then
``fastq-supervisor fastq.demo:mux --processes N`` on the demo's queue. Measured with psutil's
``memory_full_info()`` (RSS; USS: pages only this process maps, what killing it frees; PSS: shared
pages split between their users, so the PSS of the tree adds up to what it really costs):

1. **idle**: once every worker has registered and settled, before any task;
2. **drained**: after ``--tasks`` no-op tasks (``demo:noop``) were enqueued and all processed;
3. **floor**: what no Python worker on these libraries can go below, measured the same way: a parent
   that imports only ``redis.asyncio``, uvloop and psutil, ``gc.freeze()``s and forks ``--processes``
   children, each running one uvloop loop with one ``redis.asyncio`` connection that has pushed and
   popped ``--tasks`` messages. The gap between a worker and a floor child is fastq's own share.

The supervisor is the parent, the workers its children. The single-connection PING rate of the same
Redis is printed beside the table (the box is shared: read the figures against it). Run it with
``PYTHONPATH=<another tree>`` to measure another checkout (the path of the fastq imported is printed).

``--modules`` runs fresh interpreters that import what a worker process holds (the supervisor's
command line, the server, the worker and the demo's mux): RSS and USS after each import in turn
(redis-py first: its share is not fastq's to shed), the top-level packages and the heaviest
modules by import time (``-X importtime``), and the packages imported beyond redis-py's own.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Optional

import psutil
import redis

import fastq
from bench._common import ping_rate
from fastq import keys
from fastq.demo import QUEUE

MB = 1024 * 1024
# What a worker child has imported when it forks: the supervisor's command line, its server module,
# the worker and the APP (fastq.demo). The same list as tests/test_imports.py checks.
WORKER_IMPORTS = ("fastq.cli.supervisor", "fastq.server.supervisor", "fastq.server.worker", "fastq.demo")


def usage(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {"rss_mb": info.rss / MB, "uss_mb": info.uss / MB, "pss_mb": info.pss / MB}


def snapshot(sup: psutil.Process) -> dict[str, Any]:
    workers = sorted(sup.children(), key=lambda p: p.pid)
    return {"supervisor": {"pid": sup.pid, **usage(sup.pid)},
            "workers": [{"pid": w.pid, **usage(w.pid)} for w in workers]}


def wait_for_workers(r: redis.Redis, sup: psutil.Process, processes: int, registered_before: int,
                     proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until every worker has registered (asynq:servers) and the supervisor has that many children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fastq-supervisor exited early with code {proc.returncode}")
        if r.zcard(keys.ALL_SERVERS) >= registered_before + processes and len(sup.children()) >= processes:
            return
        time.sleep(0.05)
    raise SystemExit("the workers did not register in time")


def run_once(url: str, tasks: int, processes: int, settle: float) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    for key in r.scan_iter(match=f"asynq:{{{QUEUE}}}:*", count=1000):  # only the demo queue's keys
        r.delete(key)
    registered_before = r.zcard(keys.ALL_SERVERS)
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", "fastq.demo:mux", "--redis-url", url,
           "--processes", str(processes), "--queues", QUEUE, "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        sup = psutil.Process(proc.pid)
        wait_for_workers(r, sup, processes, registered_before, proc)
        time.sleep(settle)
        ping = ping_rate(url)
        idle = snapshot(sup)
        client = fastq.Client(url)
        processed_key = keys.processed_total_key(QUEUE)
        start = time.perf_counter()
        batch = [fastq.Task("demo:noop")] * 10_000
        for done in range(0, tasks, len(batch)):
            client.enqueue_many(batch[:min(len(batch), tasks - done)], queue=QUEUE)
        while int(r.get(processed_key) or 0) < tasks:
            if proc.poll() is not None:
                raise SystemExit(f"fastq-supervisor exited early with code {proc.returncode}")
            if time.perf_counter() - start > 600:
                raise SystemExit("the drain timed out")
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        client.close()
        time.sleep(settle)
        drained = snapshot(sup)
        ping_after = ping_rate(url)
        return {"tasks": tasks, "processes": processes, "enqueue_and_drain_s": elapsed, "ping_rps": ping,
                "ping_rps_after": ping_after, "idle": idle, "drained": drained,
                "floor": floor(url, tasks, processes, settle)}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        r.close()


_FLOOR = """
import asyncio, gc, os, signal, sys
import psutil, redis.asyncio, uvloop
url, n, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
gc.freeze()
for _ in range(n):
    if os.fork() == 0:
        async def main():
            r = redis.asyncio.Redis.from_url(url)
            key = "fastq-bench:floor:%d" % os.getpid()
            for _ in range(0, tasks, 1000):
                await r.rpush(key, *[b"x" * 64] * 1000)
                while await r.lpop(key, 100):
                    pass
            print("ready", flush=True)
            await asyncio.sleep(3600)
        uvloop.install()
        asyncio.run(main())
        os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
signal.pause()
"""


def floor(url: str, tasks: int, processes: int, settle: float) -> dict[str, Any]:
    """The floor row (see the module's docstring): parent and children as ``snapshot`` gives them."""
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR, url, str(processes), str(tasks)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        for _ in range(processes):
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("the floor processes did not start")
        time.sleep(settle)
        return snapshot(psutil.Process(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def print_table(result: dict[str, Any]) -> None:
    print(f"fastq {os.path.dirname(fastq.__file__)}: {result['tasks']:,} no-op tasks, {result['processes']} "
          f"worker processes, enqueue + drain {result['enqueue_and_drain_s']:.1f}s; "
          f"PING {result['ping_rps']:,.0f}/s before, {result['ping_rps_after']:,.0f}/s after")
    print(f"  {'when':<8} {'process':<12} {'pid':>7} {'RSS MB':>8} {'USS MB':>8} {'PSS MB':>8}")
    for when in ("idle", "drained", "floor"):
        snap = result[when]
        parent = "parent" if when == "floor" else "supervisor"
        rows = [(parent, snap["supervisor"])] + [(f"worker {i}", w) for i, w in enumerate(snap["workers"])]
        for name, m in rows:
            print(f"  {when:<8} {name:<12} {m['pid']:>7} {m['rss_mb']:>8.1f} {m['uss_mb']:>8.1f} {m['pss_mb']:>8.1f}")
        total = sum(m["pss_mb"] for _, m in rows)
        print(f"  {when:<8} {'tree (PSS)':<12} {'':>7} {'':>8} {'':>8} {total:>8.1f}")


# ---------------------------------------------------------------- --modules

_STEPS = """
import json, sys, psutil
proc = psutil.Process()
steps = []
before = set(sys.modules)
for name in ["(interpreter)"] + sys.argv[1].split(","):
    if name != "(interpreter)":
        __import__(name)
    m = proc.memory_full_info()
    steps.append([name, m.rss, m.uss, len(sys.modules)])
print(json.dumps({"steps": steps, "modules": sorted(set(sys.modules) - before)}))
"""


def _steps(names: str) -> dict[str, Any]:
    """RSS and USS of a fresh interpreter after each import in turn (psutil itself is imported first)."""
    out = subprocess.run([sys.executable, "-c", _STEPS, names], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _importtime(names: str) -> list[tuple[int, int, str]]:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {names}"],
                         capture_output=True, text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), m.group(4)))
    return rows


def modules(top: int, as_json: bool) -> int:
    names = ",".join(WORKER_IMPORTS)
    steps = _steps("redis.asyncio," + names)
    alone = _steps("redis.asyncio")
    times = _importtime(names)
    by_pkg: dict[str, list[int]] = {}  # top-level package -> [modules, self import us]
    for self_us, _cum, name in times:
        entry = by_pkg.setdefault(name.split(".")[0], [0, 0])
        entry[0] += 1
        entry[1] += self_us
    from_redis = set(alone["modules"])
    beyond = sorted({m.split(".")[0] for m in steps["modules"] if m not in from_redis and not m.startswith("fastq")})
    if as_json:
        print(json.dumps({"imports": WORKER_IMPORTS, "steps": steps["steps"], "packages": by_pkg,
                          "beyond_redis": beyond}, indent=2))
        return 0
    print(f"a fresh interpreter importing what a worker holds ({', '.join(WORKER_IMPORTS)}):")
    print(f"  {'after importing':<24} {'RSS MB':>8} {'USS MB':>8} {'+RSS MB':>8} {'modules':>8}")
    prev = None
    for name, rss, uss, count in steps["steps"]:
        grow = "" if prev is None else f"{(rss - prev) / MB:+8.1f}"
        print(f"  {name:<24} {rss / MB:>8.1f} {uss / MB:>8.1f} {grow:>8} {count:>8}")
        prev = rss
    print(f"\n  {'package':<24} {'modules':>8} {'import ms':>10}   (self time, -X importtime)")
    for pkg, (count, us) in sorted(by_pkg.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {pkg:<24} {count:>8} {us / 1000:>10.1f}")
    print("\n  heaviest modules (self import ms); * = not imported by redis.asyncio alone:")
    for self_us, _cum, name in sorted(times, reverse=True)[:top]:
        print(f"  {self_us / 1000:>7.1f}  {name}{'' if name in from_redis else ' *'}")
    print("\n  packages imported beyond redis.asyncio, outside fastq: " + ", ".join(beyond))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before each measurement")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--modules", action="store_true", help="list what a worker imports, heaviest first")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.modules:
        return modules(args.top, args.json)
    server = None
    url = args.redis_url
    if url is None:
        from fastq.devserver import start_dev_server

        server = start_dev_server()
        url = server.url
    try:
        results = []
        for _ in range(args.repeat):
            result = run_once(url, args.tasks, args.processes, args.settle)
            results.append(result)
            if not args.json:
                print_table(result)
        if args.json:
            print(json.dumps({"fastq": os.path.dirname(fastq.__file__), "runs": results}, indent=2))
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
