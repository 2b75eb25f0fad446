"""``fastq-demo``: enqueue many tasks, drain them with fastq-supervisor, print throughput.

The command line is ``fastq.cli.demo``; this module is the demo itself (``run``) and its
``ServeMux`` (``fastq.demo:mux``, what the supervisor serves).

Redis: ``--redis-url`` / ``$FASTQ_REDIS_URL`` when given; otherwise a private
redis-server started for the demo when one is installed; otherwise a private
embedded Valkey when the ``[embedded]`` extra is installed; otherwise the one on
127.0.0.1:6379 if it answers. The demo uses its own queue (``fastq-demo``)
and clears only that queue's keys.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Optional

import fastq
from fastq import keys

log = logging.getLogger("fastq.demo")
QUEUE = "fastq-demo"

mux = fastq.ServeMux()


@mux.handle("demo:noop")
async def noop(task: fastq.Task) -> None:
    """The benchmark task: does nothing, so the queue's own cost is what is measured."""


@mux.handle("demo:greet")
async def greet(task: fastq.Task) -> None:
    log.info("greet %s: I am task %s (retry %d of %d, queue %s)", task.payload.decode(), fastq.get_task_id(),
             fastq.get_retry_count(), fastq.get_max_retry(), fastq.get_queue_name())


@mux.handle("demo:sync")
def sync_report(task: fastq.Task) -> None:
    log.info("sync handler in a thread sees task %s", fastq.get_task_id())


def _choose_redis(url: Optional[str], embedded: bool = False) -> tuple[str, Any, str]:
    from fastq.devserver import (
        INSTALL_HINT,
        embedded_available,
        find_redis_server,
        reachable,
        server_version,
        start_dev_server,
    )

    if url:
        return url, None, "given"
    # the installed redis-server first, else the [embedded] extra
    if embedded or find_redis_server() or embedded_available():
        server = start_dev_server(embedded=True if embedded else None)
        return server.url, server, f"private {server.kind}, {server_version(server.url)}, for this demo"
    if reachable("redis://127.0.0.1:6379/0"):
        return "redis://127.0.0.1:6379/0", None, "existing Redis on 127.0.0.1:6379"
    raise SystemExit(f"fastq-demo: {INSTALL_HINT}")


def _clear_queue(client: fastq.Client) -> None:
    r = client.redis
    for key in r.scan_iter(match=keys.queue_prefix(QUEUE) + "*", count=1000):
        r.delete(key)


def _pump(stream: IO[str], lines: list[str]) -> None:
    for line in iter(stream.readline, ""):
        lines.append(line)
        if "greet" in line or "sync handler" in line or "ERROR" in line or "Traceback" in line:
            sys.stdout.write("  | " + line.split(": ", 1)[-1] if ": " in line else line)
            sys.stdout.flush()


def run(tasks: int, processes: int, concurrency: int, url: Optional[str], results: Optional[dict[str, Any]] = None,
        embedded: bool = False) -> int:
    """Run the demo once; fill ``results`` (if given) with the measured rates; return an exit code."""
    results = {} if results is None else results
    try:
        env_url = None if embedded else os.environ.get("FASTQ_REDIS_URL", "").strip() or None  # empty: unset
        url, server, source = _choose_redis(url or env_url, embedded)
    except FileNotFoundError as exc:
        raise SystemExit(f"fastq-demo: {exc}") from None
    proc = None
    try:
        print(f"redis: {url} ({source}); codec: {'Cython' if fastq.USING_SPEEDUPS else 'pure Python'}")
        client = fastq.Client(url)
        _clear_queue(client)
        t0 = time.perf_counter()
        client.enqueue_many([fastq.Task("demo:noop")] * tasks, queue=QUEUE)
        enqueue_s = time.perf_counter() - t0
        print(f"enqueued {tasks:,} no-op tasks in {enqueue_s:.2f}s ({tasks / enqueue_s:,.0f} tasks/s, enqueue_many)")
        extra = [client.enqueue(fastq.Task("demo:greet", name.encode()), queue=QUEUE)
                 for name in ("alice", "bob", "carol")]
        extra.append(client.enqueue(fastq.Task("demo:sync"), queue=QUEUE))
        print("enqueued 4 more tasks; their IDs: " + ", ".join(i.id for i in extra))
        total = tasks + len(extra)
        processed_key = keys.processed_total_key(QUEUE)
        before = int(client.redis.get(processed_key) or 0)

        cmd = [sys.executable, "-m", "fastq.cli.supervisor", "fastq.demo:mux", "--redis-url", url,
               "--processes", str(processes), "--concurrency", str(concurrency), "--queues", QUEUE]
        print(f"running: fastq-supervisor fastq.demo:mux --processes {processes} --concurrency {concurrency} "
              f"--queues {QUEUE}")
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        threading.Thread(target=_pump, args=(proc.stderr, lines), daemon=True).start()
        first = None
        done = 0
        while done < total:
            if proc.poll() is not None:
                print("".join(lines[-20:]), file=sys.stderr)
                print(f"fastq-supervisor exited early with code {proc.returncode}", file=sys.stderr)
                return 1
            done = int(client.redis.get(processed_key) or 0) - before
            if first is None and done:
                first = time.perf_counter()
            if time.perf_counter() - start > 300:
                print(f"timed out with {done:,} of {total:,} processed", file=sys.stderr)
                return 1
            time.sleep(0.01)
        end = time.perf_counter()
        wall = end - start
        drain = end - (first or start)
        results.update(tasks=total, processes=processes, concurrency=concurrency, enqueue_many_per_s=tasks / enqueue_s,
                       wall_per_s=total / wall, drain_per_s=total / drain)
        print(f"processed {total:,} tasks in {wall:.2f}s including worker start-up "
              f"({total / wall:,.0f} tasks/s); steady drain {total / drain:,.0f} tasks/s")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stats = client.redis.get(processed_key)
        print(f"{keys.processed_total_key(QUEUE)} = {int(stats):,}; supervisor exited with code {proc.returncode}")
        client.close()
        return 0 if proc.returncode == 0 else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if server is not None:
            server.stop()
