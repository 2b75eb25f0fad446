"""App enqueue benchmark: ``@app.task`` ``.enqueue()``/``.enqueue_many()`` beside ``Client``'s, in one run.

    .venv/bin/python bench/app_enqueue.py --tasks 20000 --single 3000 --repeat 7

Uses a private redis-server (persistence off) unless --redis-url is given, and its own queue
(cleared between runs). Printed: the single-connection PING rate (``redis-benchmark -c 1``, or a
socket loop when that tool is missing), then tasks/s of each path as the median of ``--repeat``
runs, the App and the Client path back to back in each run (each goes first every other run) so
both see the same machine; the median of the runs' App/Client ratios is printed too.

The task is ``send(to: str, subject: str, user_id: int, score: float) -> None``. The Client side
does what a user of ``Client`` writes for the same task: ``fastq.Task(name, json bytes)`` built
from the arguments *inside* the timing (``json.dumps(..., separators=(",", ":")).encode()``),
because the App's figure includes its encoding, and a Client user pays for an encoding too;
timing only ``Client.enqueue_many`` on prebuilt tasks would compare the App's encode + write
against a bare write. Both write the same number of tasks through one ``Client`` connection.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Callable

import fastq
from fastq import keys

QUEUE = "bench-app"
NAME = "bench:send"


def ping_rate(url: str) -> tuple[float, str]:
    """Single-connection PING round trips per second, and how it was measured."""
    from urllib.parse import urlparse

    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    exe = shutil.which("redis-benchmark")
    if exe is not None:
        out = subprocess.run([exe, "-h", host, "-p", str(port), "-c", "1", "-n", "20000", "-t", "ping", "-q"],
                             capture_output=True, text=True, timeout=120).stdout
        rates = [float(m) for m in re.findall(r"PING_\w+: ([\d.]+) requests per second", out)]
        if rates:
            return statistics.mean(rates), "redis-benchmark -c 1 -n 20000 -t ping"
    with socket.create_connection((host, port)) as sock:
        n, start = 20000, time.perf_counter()
        for _ in range(n):
            sock.sendall(b"PING\r\n")
            sock.recv(64)
        return n / (time.perf_counter() - start), "PING over one socket"


def clear(client: fastq.Client) -> None:
    r = client.redis
    for key in r.scan_iter(match=f"asynq:{{{QUEUE}}}:*", count=1000):
        r.delete(key)


def timed(fn: Callable[[], object], n: int, client: fastq.Client) -> float:
    clear(client)
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    assert client.redis.llen(keys.pending_key(QUEUE)) == n, "not every task was written"
    return n / elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20_000, help="tasks per enqueue_many run")
    p.add_argument("--single", type=int, default=3_000, help="tasks per run of single enqueue() calls")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--profile", choices=("app-many", "app-single"), help="cProfile one App run instead")
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    args = p.parse_args()

    server = None
    url = args.redis_url
    if url is None:
        from fastq.devserver import start_dev_server

        server = start_dev_server(embedded=False)
        url = server.url
    os.environ["FASTQ_REDIS_URL"] = url
    try:
        return run(args, url)
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace, url: str) -> int:
    app = fastq.App(url)

    @app.task(name=NAME, queue=QUEUE)
    def send(to: str, subject: str, user_id: int, score: float) -> None:
        """The benchmark task (never run here)."""

    client = fastq.Client(url)
    app_client = app.client
    calls = [(f"user{i}@example.com", "Welcome aboard", i, i / 7) for i in range(max(args.tasks, args.single))]
    many, single = calls[:args.tasks], calls[:args.single]
    dumps = json.dumps

    def app_many() -> None:
        send.enqueue_many(many)

    def client_many() -> None:
        client.enqueue_many([fastq.Task(NAME, dumps({"to": to, "subject": s, "user_id": u, "score": sc},
                                                    separators=(",", ":")).encode()) for to, s, u, sc in many],
                            queue=QUEUE)

    def app_single() -> None:
        enqueue = send.enqueue
        for call in single:
            enqueue(*call)

    def client_single() -> None:
        enqueue, Task = client.enqueue, fastq.Task
        for to, s, u, sc in single:
            enqueue(Task(NAME, dumps({"to": to, "subject": s, "user_id": u, "score": sc},
                                     separators=(",", ":")).encode()), queue=QUEUE)

    # warm up both connections and the scripts
    timed(app_single, args.single, app_client)
    timed(client_single, args.single, client)
    if args.profile:
        import cProfile
        import pstats

        fn, n = (app_many, args.tasks) if args.profile == "app-many" else (app_single, args.single)
        prof = cProfile.Profile()
        clear(client)
        prof.runcall(fn)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        print(f"({n:,} tasks)")
        return 0

    ping, how = ping_rate(url)
    rates: dict[str, list[float]] = {k: [] for k in ("app_many", "client_many", "app_single", "client_single")}
    pairs = (("app_many", app_many, "client_many", client_many, args.tasks),
             ("app_single", app_single, "client_single", client_single, args.single))
    for i in range(args.repeat):
        for app_key, app_fn, client_key, client_fn, n in pairs:
            order = [(app_key, app_fn), (client_key, client_fn)]
            for key, fn in order if i % 2 == 0 else order[::-1]:  # each goes first every other run
                rates[key].append(timed(fn, n, client))
    clear(client)
    ping_after, _ = ping_rate(url)
    med = {k: statistics.median(v) for k, v in rates.items()}

    def line(label: str, app_key: str, client_key: str, n: int) -> str:
        a, c = med[app_key], med[client_key]
        paired = statistics.median(x / y for x, y in zip(rates[app_key], rates[client_key], strict=True))
        return (f"  {label:<13} {n:>7,} tasks   App {a:>9,.0f}/s   Client {c:>9,.0f}/s   "
                f"App/Client {a / c:6.1%} (median of the runs' ratios {paired:6.1%})")

    print(f"single-connection PING: {ping:,.0f}/s before, {ping_after:,.0f}/s after ({how})")
    print(f"median of {args.repeat} runs (App and Client back to back, each first every other run), tasks/s:")
    print(line("enqueue_many", "app_many", "client_many", args.tasks))
    print(line("enqueue", "app_single", "client_single", args.single))
    if args.json:
        print(json.dumps({"ping_rps": ping, "ping_rps_after": ping_after, "ping_method": how, "median": med,
                          "runs": rates, "tasks": args.tasks, "single": args.single}, indent=2))
    client.close()
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
