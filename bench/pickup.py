"""Foreign pickup: how soon an idle worker starts a task written by Go's client, with and without
``--keyspace-wakeup``; fastq-enqueued pickup beside it, and what the flag costs.

    .venv/bin/python -m bench.pickup --tasks 40

Starts a private redis-server (unless --redis-url) and, twice, ``fastq-supervisor bench.pickup:mux``
(2 processes): once as it is, once with ``--keyspace-wakeup``. Against each:

* **pickup**: one task at a time, a random pause (default 1.0-1.6 s, so the idle back-off has
  reached ``--poll-interval``) between them, alternately written the way Go Asynq's client writes
  it (a raw redis-py MULTI: ``SADD asynq:queues``, ``HSET`` of the task hash with the encoded
  TaskMessage, ``state=pending`` and ``pending_since``, ``LPUSH`` of the ID; no ``fastq_notify``)
  and with ``fastq.Client.enqueue``. The handler's first statement reads ``time.time()``; it then
  pushes ``<id> <time>`` to a list the bench waits on with ``BLPOP``, so recording costs the
  measured task nothing. Latency = that time minus ``time.time()`` just before the write.
* **idle load**: ``total_commands_processed`` (INFO stats, commands run inside scripts included)
  over ``--idle-seconds`` with both workers idle, as commands/s.
* **drain CPU**: ``--drain`` no-op tasks written one at a time in the Go layout by one client as fast
  as it goes, while the workers take them; worker CPU (user + system of both processes, psutil)
  per task, median of ``--repeat`` drains. **paced**: the same for ``--paced`` tasks written
  ``--paced-rate`` a second (workers go idle between tasks: the subscribe/unsubscribe case). A
  subscribed worker gets a message for every list command on the pending list, the pops of every
  worker included; workers subscribe only while idle (fastq.server.keyspace): this is what the
  flag costs.

The single-connection PING rate is printed beside (this box is shared; read the figures against it).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import redis

import fastq
from bench._common import ping_rate
from fastq import keys
from fastq._codec import TaskMessage, encode_message
from fastq.devserver import start_dev_server

QUEUE = "pickup"
STARTS = "bench:pickup:starts"  # not an asynq: key, so nothing of fastq's ever reads it

mux = fastq.ServeMux()
_recorder: Any = None


@mux.handle("bench:pickup")
async def record_start(task: fastq.Task) -> None:
    started = time.time()  # first: what happens below is not part of the pickup
    global _recorder
    if _recorder is None:
        import redis.asyncio

        _recorder = redis.asyncio.Redis.from_url(os.environ["FASTQ_REDIS_URL"])
    await _recorder.rpush(STARTS, f"{fastq.get_task_id()} {started!r}")


@mux.handle("bench:noop")
async def noop(task: fastq.Task) -> None:
    return None


def go_enqueue(r: redis.Redis, task_type: str) -> tuple[str, float]:
    """One task as Go Asynq's client writes it; returns its ID and ``time.time()`` before the write."""
    tid = str(uuid.uuid4())
    msg = encode_message(TaskMessage(type=task_type, payload=b"", id=tid, queue=QUEUE, retry=25, timeout=1800))
    pipe = r.pipeline(transaction=True)
    pipe.sadd(keys.ALL_QUEUES, QUEUE)
    pipe.hset(keys.task_key(QUEUE, tid), mapping={"msg": msg, "state": "pending",
                                                   "pending_since": str(time.time_ns())})
    pipe.lpush(keys.pending_key(QUEUE), tid)
    t0 = time.time()
    pipe.execute()
    return tid, t0


def _wait_start(r: redis.Redis, tid: str) -> float:
    while True:
        got = r.blpop([STARTS], timeout=30)
        if got is None:
            raise RuntimeError(f"task {tid} did not start within 30 s")
        got_id, _, when = got[1].decode().partition(" ")
        if got_id == tid:
            return float(when)


def _pickups(r: redis.Redis, client: fastq.Client, n: int, pause: tuple[float, float],
             rng: random.Random) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"go": [], "fastq": []}
    for i in range(2 * n):
        time.sleep(rng.uniform(*pause))
        if i % 2 == 0:
            tid, t0 = go_enqueue(r, "bench:pickup")
            out["go"].append(_wait_start(r, tid) - t0)
        else:
            t0 = time.time()
            tid = client.enqueue(fastq.Task("bench:pickup"), queue=QUEUE).id
            out["fastq"].append(_wait_start(r, tid) - t0)
    return out


def _idle_load(r: redis.Redis, seconds: float) -> float:
    time.sleep(2.0)  # let the back-off reach poll_interval
    before = int(r.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    after = int(r.info("stats")["total_commands_processed"])
    return (after - before - 1) / seconds  # less the first INFO


def _workers(proc: subprocess.Popen[bytes]) -> list[Any]:
    import psutil

    return [c for c in psutil.Process(proc.pid).children() if "scheduler" not in " ".join(c.cmdline())]


def _drain_cpu(r: redis.Redis, proc: subprocess.Popen[bytes], n: int, rate: float = 0.0) -> tuple[float, float]:
    """Worker CPU µs per task and tasks/s for ``n`` single Go-layout enqueues drained as they come,
    written as fast as one client goes or, with ``rate``, that many a second."""
    workers = _workers(proc)
    processed = keys.processed_total_key(QUEUE)
    done_before = int(r.get(processed) or 0)
    cpu0 = sum(sum(w.cpu_times()[:2]) for w in workers)
    t0 = time.perf_counter()
    for i in range(n):
        if rate:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        go_enqueue(r, "bench:noop")
    while int(r.get(processed) or 0) < done_before + n:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    cpu = sum(sum(w.cpu_times()[:2]) for w in workers) - cpu0
    return cpu / n * 1e6, n / elapsed


def _median_drain(r: redis.Redis, proc: subprocess.Popen[bytes], n: int, repeat: int,
                  rate: float = 0.0) -> tuple[float, float]:
    if not n:
        return float("nan"), float("nan")
    runs = [_drain_cpu(r, proc, n, rate) for _ in range(repeat)]
    return statistics.median(c for c, _ in runs), statistics.median(t for _, t in runs)


def _start(url: str, root: Path, args: argparse.Namespace, wakeup: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FASTQ_REDIS_URL": url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", "bench.pickup:mux", "--redis-url", url,
           "--processes", "2", "--queues", QUEUE, "--poll-interval", str(args.poll_interval),
           "--log-level", "warning"]
    if wakeup:
        cmd.append("--keyspace-wakeup")
    return subprocess.Popen(cmd, env=env, cwd=root)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def _pct(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{statistics.median(ms):8.2f} {p99:8.2f} {ms[-1]:8.2f}"


def foreign_pickups(url: str, n: int, pause: tuple[float, float], wakeup: bool, seed: int = 18,
                    poll_interval: float = 1.0) -> list[float]:
    """Start ``fastq-supervisor bench.pickup:mux`` (2 processes, ``--keyspace-wakeup`` if ``wakeup``),
    write ``n`` tasks in Go's layout one at a time, ``pause`` seconds apart (random); return each
    one's pickup latency in seconds, then stop the workers (used by ``bench.compare``)."""
    root = Path(__file__).resolve().parent.parent
    r = redis.Redis.from_url(url)
    rng = random.Random(seed)
    r.config_set("notify-keyspace-events", "")  # Redis's default, whatever ran before
    r.delete(STARTS)
    proc = _start(url, root, argparse.Namespace(poll_interval=poll_interval), wakeup)
    try:
        tid, _ = go_enqueue(r, "bench:pickup")  # the workers are up (and subscribed)
        _wait_start(r, tid)
        out = []
        for _ in range(n):
            time.sleep(rng.uniform(*pause))
            tid, t0 = go_enqueue(r, "bench:pickup")
            out.append(_wait_start(r, tid) - t0)
        return out
    finally:
        _stop(proc)
        r.config_set("notify-keyspace-events", "")
        r.close()


def run(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    root = Path(__file__).resolve().parent.parent
    r = redis.Redis.from_url(url)
    rng = random.Random(args.seed)
    rows = []
    try:
        for wakeup in (False, True):
            r.config_set("notify-keyspace-events", "")  # each run starts from Redis's default
            r.delete(STARTS)
            proc = _start(url, root, args, wakeup)
            client = fastq.Client(url)
            try:
                tid, _ = go_enqueue(r, "bench:pickup")  # the workers are up (and subscribed)
                _wait_start(r, tid)
                time.sleep(0.5)
                ping = ping_rate(r)
                lat = _pickups(r, client, args.tasks, (args.pause_min, args.pause_max), rng)
                idle = _idle_load(r, args.idle_seconds)
                cpu, rate = _median_drain(r, proc, args.drain, args.repeat)
                paced, _ = _median_drain(r, proc, args.paced, args.repeat, args.paced_rate)
                flags = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
                rows.append({"wakeup": wakeup, "go": lat["go"], "fastq": lat["fastq"], "idle": idle,
                             "cpu_us": cpu, "rate": rate, "paced_us": paced, "ping": ping, "ping_after": ping_rate(r),
                             "flags": flags})
            finally:
                client.close()
                _stop(proc)
    finally:
        r.close()
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=40, help="pickups per kind (Go layout, fastq) and run")
    p.add_argument("--pause-min", type=float, default=1.0)
    p.add_argument("--pause-max", type=float, default=1.6)
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--drain", type=int, default=10000, help="tasks of the drain-CPU step (0: skip it)")
    p.add_argument("--paced", type=int, default=1000, help="tasks of the paced drain-CPU step (0: skip it)")
    p.add_argument("--paced-rate", type=float, default=200.0, help="tasks/s of the paced drain")
    p.add_argument("--repeat", type=int, default=3, help="drains of each kind; the median is shown")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--redis-url", default=None)
    args = p.parse_args(argv)
    server = None
    url = args.redis_url
    if url is None:
        server = start_dev_server()
        url = server.url
    try:
        rows = run(url, args)
    finally:
        if server is not None:
            server.stop()
    print(f"pickup of a task by an idle worker, 2 worker processes, poll interval {args.poll_interval:g} s, "
          f"{args.tasks} tasks per row, {args.pause_min:g}-{args.pause_max:g} s apart")
    print(f"{'workers':<20} {'writer':<14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   "
          f"{'idle cmd/s':>10} {'drain µs/task':>13} {'drain/s':>8} {'paced µs/task':>13} {'PING/s':>15}")
    for row in rows:
        name = "--keyspace-wakeup" if row["wakeup"] else "default"
        for writer in ("go", "fastq"):
            label = "Go layout (raw)" if writer == "go" else "fastq.Client"
            extra = (f"{row['idle']:10.1f} {row['cpu_us']:13.1f} {row['rate']:8,.0f} {row['paced_us']:13.1f} "
                     f"{row['ping']:7,.0f}/{row['ping_after']:<7,.0f}") if writer == "go" else ""
            print(f"{name:<20} {label:<14} {_pct(row[writer])}   {extra}")
        print(f"{'':<20} notify-keyspace-events after the run: {row['flags']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
