"""Sync vs async no-op drain, side by side in one run: tasks/s of each, their ratio, PING rate beside.

    .venv/bin/python -m bench.sync_drain --tasks 100000 --repeat 3
    .venv/bin/python -m bench.sync_drain --baseline /tmp/old-tree      # also run another checkout's workers
    .venv/bin/python -m bench.sync_drain --variant threads="--pool threads"

Each round enqueues N no-op tasks of one kind (``async def`` or plain ``def`` handler) and times
``fastq-supervisor`` draining them (first finished task to the last, as ``bench/drain.py``). The
rounds of every variant are interleaved (async, sync, async, sync, ...), so a figure is only ever
compared with figures taken minutes apart on the same noisy box. Variants: this tree with its
default settings (``current``), this tree with extra supervisor flags (``--variant NAME=FLAGS``)
and, with ``--baseline PATH``, the workers of another checkout (its ``fastq`` package imported
first; the enqueueing client is always this tree's). Uses a private redis-server unless
``--redis-url`` is given (which is then flushed).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import fastq
from bench._common import ping_rate
from fastq import keys

QUEUE = "bench-sync"
APP_MODULE = "_fastq_bench_noop"
APP = '''"""No-op handlers of bench/sync_drain.py (written to a temporary directory on each run)."""
import sys

import fastq

print("fastq-bench-app: fastq from " + fastq.__file__, file=sys.stderr)
mux = fastq.ServeMux()


@mux.handle("noop:async")
async def noop_async(task):
    pass


@mux.handle("noop:sync")
def noop_sync(task):
    pass
'''


def _drain(url: str, client: fastq.Client, kind: str, tasks: int, args: argparse.Namespace, pythonpath: str,
           flags: list[str]) -> dict[str, Any]:
    r = client.redis
    r.flushdb()
    client.enqueue_many([fastq.Task(f"noop:{kind}")] * tasks, queue=QUEUE)
    ping = ping_rate(r)
    key = keys.processed_total_key(QUEUE)
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", f"{APP_MODULE}:mux", "--redis-url", url,
           "--processes", str(args.processes), "--concurrency", str(args.concurrency), "--queues", QUEUE,
           "--log-level", "WARNING", *flags]
    env = {**os.environ, "PYTHONPATH": pythonpath}
    start = time.perf_counter()
    # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=pythonpath.split(os.pathsep)[-1])
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    first: Optional[float] = None
    cpu0: dict[int, float] = {}
    done0 = 0
    done = 0
    try:
        while done < tasks:
            if proc.poll() is not None:
                raise SystemExit(f"fastq-supervisor exited early ({proc.returncode}):\n{''.join(lines[-20:])}")
            if time.perf_counter() - start > 600:
                raise SystemExit(f"timed out with {done:,} of {tasks:,} processed")
            done = int(r.get(key) or 0)
            if first is None and done:
                first = time.perf_counter()
                cpu0 = _cpu(proc.pid)
                done0 = done
            time.sleep(0.005)
        end = time.perf_counter()
        cpu1 = _cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    origin = next((line.split(" from ", 1)[1].strip() for line in lines if "fastq-bench-app:" in line), "?")
    expected = str(Path(pythonpath.split(os.pathsep)[0], "fastq", "__init__.py"))
    if origin != expected:
        raise SystemExit(f"the workers imported fastq from {origin}, not {expected}")
    errors = [line for line in lines if "ERROR" in line or "Traceback" in line]
    if errors:
        print("".join(errors[:5]), file=sys.stderr)
    cpu = sum(t - cpu0.get(pid, 0.0) for pid, t in cpu1.items())
    return {"per_s": tasks / (end - (first or start)), "ping": ping, "cpu_us": cpu / max(1, tasks - done0) * 1e6}


def _cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each worker process under the supervisor ``pid``."""
    import psutil

    out = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        out[child.pid] = t.user + t.system
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--handler", choices=["sync", "async", "both"], default="both")
    p.add_argument("--baseline", metavar="PATH", help="also run the workers of the checkout at PATH")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="also run this tree with these extra fastq-supervisor flags (repeatable)")
    p.add_argument("--no-current", action="store_true", help="leave out this tree with default settings")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON at the end")
    args = p.parse_args()
    here = str(Path(__file__).resolve().parent.parent)
    appdir = tempfile.mkdtemp(prefix="fastq-bench-")
    Path(appdir, f"{APP_MODULE}.py").write_text(APP)
    variants: list[tuple[str, str, list[str]]] = []  # (name, fastq tree, flags)
    if args.baseline:
        variants.append(("baseline", str(Path(args.baseline).resolve()), []))
    if not args.no_current:
        variants.append(("current", here, []))
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        variants.append((name, here, shlex.split(flags)))
    kinds = ["async", "sync"] if args.handler == "both" else [args.handler]
    server = None
    url = args.redis_url
    if url is None:
        from fastq.devserver import start_dev_server

        server = start_dev_server()
        url = server.url
    client = fastq.Client(url)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(v[0], k): [] for v in variants for k in kinds}
    try:
        for i in range(args.repeat):
            for name, tree, flags in variants:
                for kind in kinds:
                    res = _drain(url, client, kind, args.tasks, args, os.pathsep.join([tree, appdir]), flags)
                    runs[(name, kind)].append(res)
                    print(f"round {i + 1} {name:>10} {kind:>5}: {res['per_s']:>9,.0f} tasks/s  "
                          f"worker CPU {res['cpu_us']:5.1f} us/task  (PING {res['ping']:,.0f}/s)", flush=True)
    finally:
        client.close()
        if server is not None:
            server.stop()
    print(f"\n{args.repeat} rounds, {args.tasks:,} no-op tasks, {args.processes} processes x {args.concurrency}; "
          "median tasks/s and worker CPU per task (PING/s median over the rounds):")
    for name, _, flags in variants:
        med = {k: statistics.median(r["per_s"] for r in runs[(name, k)]) for k in kinds}
        pings = statistics.median(r["ping"] for k in kinds for r in runs[(name, k)])
        cpu = {k: statistics.median(r["cpu_us"] for r in runs[(name, k)]) for k in kinds}
        line = "  ".join(f"{k} {med[k]:>9,.0f} ({cpu[k]:.1f} us CPU)" for k in kinds)
        ratio = f"  sync/async {med['sync'] / med['async']:.2f}" if len(kinds) == 2 else ""
        label = f"{name} {' '.join(flags)}".strip()
        print(f"  {label:<28} {line}{ratio}  (PING {pings:,.0f}/s)")
        if len(kinds) == 2:  # the ratio round by round: each pair ran back to back
            pairs = [s["per_s"] / a["per_s"] for a, s in zip(runs[(name, "async")], runs[(name, "sync")], strict=True)]
            print(f"  {'':<28} per-round sync/async: {', '.join(f'{x:.2f}' for x in pairs)}")
    if args.json:
        print(json.dumps({f"{n}/{k}": v for (n, k), v in runs.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
