"""fastq's drain against a bare reference loop over the same key layout, interleaved, one Redis.

    .venv/bin/python -m bench.reference                      # 200,000 tasks, 3 rounds
    .venv/bin/python -m bench.reference --fastq base=/tmp/bench-base --fastq new=.   # before/after

One private redis-server (persistence off) unless ``--redis-url`` (it is FLUSHALLed). Each round,
for every mode in turn (the order rotates from round to round), Redis is flushed, N no-op tasks are
written with ``fastq.Client.enqueue_many`` (Go Asynq's layout, as fastq writes it) and drained:

* ``ref`` — the plain layout cost: one bare Python process per core, no handlers, no asyncio, no
  lease thread. Each round trip is one pipeline: the ack of the previous batch (Asynq's ``done``:
  ``LREM`` active, ``ZREM`` lease, ``DEL`` the task hash, ``INCRBY`` the processed counters) and
  fastq's own dequeue script (``fastq/lua/dequeue.lua``) for the next batch.
* ``ref-fastq-ack`` — the same loop acking with fastq's ``done.lua`` (lease-token fencing, the
  ``fastq_done`` PUBLISH): the cost of fastq's scripts without fastq's worker.
* ``fastq`` (or each ``--fastq NAME=PATH``) — ``fastq-supervisor fastq.demo:mux --processes 2
  --concurrency 100`` as ``bench/drain.py`` runs it, with fastq imported from PATH (``PYTHONPATH``):
  give main's tree as a second one for a before/after in the same run.

Per drain: tasks/s (steady: first processed task to last), Redis CPU µs/task (INFO cpu
``used_cpu_sys`` + ``used_cpu_user``, delta over the steady part / tasks), worker CPU µs/task
(psutil, user + system of every worker process), and from ``INFO commandstats`` (reset before
the drain) the commands Redis ran per task and the µs Redis spent in each per task. The
single-connection PING rate (``bench/_common.py``) is measured before every drain: this box is
shared; compare within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import psutil
import redis

from bench._common import cpu_seconds, ping_rate, process_tree, redis_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
QUEUE = "fastq-demo"  # fastq.demo's queue: the supervisor below serves fastq.demo:mux

# Asynq's done (markAsDone: LREM active, ZREM lease, DEL task), batched, counters as Asynq's.
PLAIN_ACK = """
for i = 3, #ARGV do
    local id = ARGV[i]
    redis.call("LREM", KEYS[1], -1, id)
    redis.call("ZREM", KEYS[2], id)
    redis.call("DEL", ARGV[2] .. id)
end
local n = #ARGV - 2
if n > 0 then
    if redis.call("INCRBY", KEYS[3], n) == n then redis.call("EXPIREAT", KEYS[3], ARGV[1]) end
    redis.call("INCRBY", KEYS[4], n)
end
return n
"""


# --------------------------------------------------------------------------- the bare loop

def loop(url: str, batch: int, ack: str) -> int:
    """One reference worker: dequeue ``batch``, ack them with the next dequeue, until empty for 1 s."""
    from bench.redis_cost import claimed
    from fastq import keys
    from fastq._rdb import scripts as s
    from fastq._rdb.outcome import Done
    from fastq._rdb.worker import STATS_TTL, dequeue_keys, settle_calls, utc_date

    r = redis.Redis.from_url(url)
    token = f"ref-{os.getpid()}:1"
    dq = r.register_script(s.DEQUEUE.source)
    dq_keys = dequeue_keys(QUEUE)
    dq_args = [batch, 1800, token, keys.task_key_prefix(QUEUE)]
    prefix = keys.task_key_prefix(QUEUE)
    expire = int(time.time()) + STATS_TTL
    stat_keys = [keys.processed_key(QUEUE, utc_date(time.time())), keys.processed_total_key(QUEUE)]
    acker = r.register_script(PLAIN_ACK)
    ack_keys = [keys.active_key(QUEUE), keys.lease_key(QUEUE), *stat_keys]
    acker.sha = r.script_load(acker.script)
    dq.sha = r.script_load(dq.script)
    done_sha = r.script_load(s.DONE.source)
    held: list[bytes] = []
    idle_since: Optional[float] = None
    while True:
        pipe = r.pipeline(transaction=False)
        if held and ack == "plain":
            pipe.evalsha(acker.sha, len(ack_keys), *ack_keys, expire, prefix, *held)
        elif held:  # fastq's done.lua, called as fastq's workers build the call
            (call,) = settle_calls([Done(QUEUE, tid.decode(), token) for tid in held], time.time())
            call_keys, call_args = call.args
            pipe.evalsha(done_sha, len(call_keys), *call_keys, *call_args)
        pipe.evalsha(dq.sha, len(dq_keys), *dq_keys, *dq_args)
        held = [tid for tid, _ in claimed(pipe.execute()[-1])]
        if held:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 1.0:
            return 0
        else:
            time.sleep(0.001)


# --------------------------------------------------------------------------- the driver

def _fill(url: str, n: int) -> None:
    import fastq

    client = fastq.Client(url)
    try:
        for i in range(0, n, 50_000):
            client.enqueue_many([fastq.Task("demo:noop")] * min(50_000, n - i), queue=QUEUE)
    finally:
        client.close()


def _commandstats(r: redis.Redis) -> dict[str, tuple[int, float]]:
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
            for k, v in r.info("commandstats").items()}


def drain(url: str, mode: str, path: Optional[str], n: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Flush, fill ``n`` tasks, drain them with ``mode``; the figures of the steady part."""
    from fastq import keys

    r = redis.Redis.from_url(url)
    r.flushall()
    _fill(url, n)
    r.config_resetstat()
    ping = ping_rate(r)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cwd = str(REPO)
    if mode.startswith("ref"):
        env["PYTHONPATH"] = cwd
        ack = "plain" if mode == "ref" else "fastq"
        commands = [[sys.executable, "-m", "bench.reference", "--loop", url, "--batch", str(args.batch), "--ack", ack]
                    for _ in range(args.processes)]
    else:
        cwd = env["PYTHONPATH"] = os.path.abspath(path or str(REPO))  # python -m puts the cwd first
        source = subprocess.run([sys.executable, "-c", "import fastq; print(fastq.__file__)"], cwd=cwd, env=env,
                                capture_output=True, text=True).stdout.strip()
        if not source.startswith(cwd + os.sep):
            raise RuntimeError(f"{mode}: fastq imports from {source}, not from {cwd}")
        commands = [[sys.executable, "-m", "fastq.cli.supervisor", "fastq.demo:mux", "--redis-url", url,
                     "--processes", str(args.processes), "--concurrency", str(args.concurrency),
                     "--batch-size", str(args.batch), "--queues", QUEUE, "--log-level", "WARNING"]]
    processed = keys.processed_total_key(QUEUE)
    logs = [open(log_dir / f"{mode}-{i}.log", "wb") for i in range(len(commands))]
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
             for c, log in zip(commands, logs, strict=True)]
    try:
        start = time.perf_counter()
        first = None
        first_done = 0
        cpu0 = rcpu0 = 0.0
        stats0: dict[str, tuple[int, float]] = {}
        tree: list[psutil.Process] = []
        while True:
            done = int(r.get(processed) or 0)
            now = time.perf_counter()
            if first is None and done > 0:
                tree = process_tree(procs)
                first, first_done = now, done
                cpu0, rcpu0, stats0 = cpu_seconds(tree), redis_cpu_seconds(r), _commandstats(r)
            if done >= n:
                break
            if now - start > args.timeout:
                raise RuntimeError(f"{mode}: timed out with {done:,} of {n:,} done")
            for p in procs:
                if p.poll() is not None and not mode.startswith("ref"):  # reference loops end when idle
                    raise RuntimeError(f"{mode}: exited early with code {p.returncode}; see {log_dir}")
            time.sleep(0.002)
        end = time.perf_counter()
        cpu1, rcpu1, stats1 = cpu_seconds(tree), redis_cpu_seconds(r), _commandstats(r)
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait(5)
        for log in logs:
            log.close()
    steady = n - first_done
    stats = {}
    for name, (calls, usec) in stats1.items():
        c0, u0 = stats0.get(name, (0, 0.0))
        if calls - c0 > 0 and name not in ("info", "get", "config|resetstat", "ping"):
            stats[name] = {"calls_per_task": (calls - c0) / steady, "usec_per_task": (usec - u0) / steady}
    r.close()
    return {"mode": mode, "path": path, "tasks": n, "steady_tasks": steady, "per_s": steady / (end - first),
            "wall_per_s": n / (end - start), "redis_cpu_us": (rcpu1 - rcpu0) / steady * 1e6,
            "worker_cpu_us": (cpu1 - cpu0) / steady * 1e6, "ping_rps": ping,
            "commands": dict(sorted(stats.items(), key=lambda kv: -kv[1]["usec_per_task"]))}


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--processes", type=int, default=2, help="worker processes of every mode (default 2: per core)")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--batch", type=int, default=200, help="tasks per dequeue (fastq: --batch-size)")
    p.add_argument("--fastq", action="append", default=[], metavar="NAME=PATH",
                   help="a fastq tree to drain with (PYTHONPATH); repeatable; default fastq=this tree")
    p.add_argument("--modes", default="ref,ref-fastq-ack,fastq",
                   help="comma-separated: ref, ref-fastq-ack, and the --fastq names")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--redis-url", default=None, help="use this Redis (FLUSHALLed!) instead of a private one")
    p.add_argument("--json", default=None, metavar="FILE", help="write every drain's figures here")
    p.add_argument("--loop", default=None, help=argparse.SUPPRESS)  # internal: run one reference worker
    p.add_argument("--ack", default="plain", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.loop:
        return loop(args.loop, args.batch, args.ack)
    trees = dict(v.split("=", 1) for v in args.fastq) or {"fastq": str(REPO)}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "fastq" in modes and "fastq" not in trees:
        modes = [m for m in modes if m != "fastq"] + list(trees)
    for m in modes:
        if not m.startswith("ref") and m not in trees:
            p.error(f"unknown mode {m!r}")
    server = None
    url = args.redis_url
    if url is None:
        from fastq.devserver import start_dev_server

        server = start_dev_server()
        url = server.url
    log_dir = Path(tempfile.mkdtemp(prefix="fastq-reference-"))
    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(args.rounds):
            order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
            for mode in order:
                row = drain(url, mode, trees.get(mode), args.tasks, args, log_dir)
                row["round"] = rnd
                rows.append(row)
                print(f"round {rnd + 1} {mode:<14} {row['per_s']:>9,.0f} tasks/s   Redis {row['redis_cpu_us']:5.2f} "
                      f"µs/task   workers {row['worker_cpu_us']:6.2f} µs/task   PING {row['ping_rps']:,.0f}/s",
                      flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"\n{args.tasks:,} no-op tasks, {args.processes} processes, batch {args.batch}, median of {args.rounds} "
          f"interleaved rounds:")
    print(f"{'mode':<16} {'tasks/s':>9} {'Redis µs/task':>14} {'worker µs/task':>15} {'Redis cmds/task':>16} "
          f"{'PING/s':>8}")
    for mode in modes:
        mine = [row for row in rows if row["mode"] == mode]
        cmds = statistics.median(sum(c["calls_per_task"] for c in row["commands"].values()) for row in mine)
        print(f"{mode:<16} {_median(mine, 'per_s'):>9,.0f} {_median(mine, 'redis_cpu_us'):>14.2f} "
              f"{_median(mine, 'worker_cpu_us'):>15.2f} {cmds:>16.2f} {_median(mine, 'ping_rps'):>8,.0f}")
    last = {row["mode"]: row for row in rows}
    print("\nwhere Redis spends its time (INFO commandstats of the last round: calls and µs per task):")
    for mode in modes:
        parts = [f"{name} {c['calls_per_task']:.2f}×/{c['usec_per_task']:.2f}µs"
                 for name, c in list(last[mode]["commands"].items())[:9]]
        print(f"  {mode:<14} " + ", ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
