"""Redis's own work per task, counted in instructions (valgrind callgrind): repeatable on a noisy box.

    .venv/bin/python -m bench.redis_cost                                  # this tree's done.lua
    .venv/bin/python -m bench.redis_cost --tree base=/tmp/bench-base --tree new=.   # before/after

For each variant a fresh ``redis-server`` runs under ``valgrind --tool=callgrind`` with
instrumentation off; N tasks are written in Go Asynq's layout by a raw pipeline (``HSET`` +
``LPUSH``), instrumentation is switched on (``callgrind_control -i on``) and one client drains them
the way ``bench/reference.py``'s loop does: each round trip is the ack of the previous batch and the dequeue
of the next (``fastq/lua/dequeue.lua`` of this tree). The server then exits and its instruction
count (Ir, everything Redis did: parsing, Lua, commands, replies) is divided by N. The lease zset
holds ``--resident`` entries of tasks claimed elsewhere throughout, as in a real drain (a zset that
empties after every batch is rebuilt as a listpack and converted again by the next dequeue, which
would dominate the count).

Variants: ``dequeue`` (dequeue only, never acked: the dequeue's share), ``plain`` (Asynq's done:
``LREM``, ``ZREM``, ``DEL``, ``INCRBY``, see ``bench/reference.py``), and for every ``--tree
NAME=PATH`` that tree's ``done.lua``, called as that tree's ``settle_calls`` builds the call (run in
a process with that tree on ``PYTHONPATH``), with lease tokens as fastq's workers ack; and
``drain:NAME``, that tree's ``fastq-supervisor fastq.demo:mux`` (2 processes x 100) draining the
same tasks: all the Redis work of a real drain, start-up (script loads), heartbeats and lease
extensions included (Redis under valgrind is slow, so acks batch more than at full speed).
``--script complete`` measures ``complete.lua`` (retention) instead, in the loop only.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import redis

REPO = Path(__file__).resolve().parent.parent
QUEUE = "cost"


def claimed(reply: list[Any]) -> list[tuple[bytes, Any]]:
    """(ID, message) pairs of a dequeue reply: ``[queue, expiry, id, msg, ...]``, or with a list of
    workflow links third (``[queue, expiry, links, id, msg, ...]``, later fastq versions)."""
    if not reply:
        return []
    start = 3 if len(reply) > 2 and isinstance(reply[2], list) else 2
    return list(zip(reply[start::2], reply[start + 1::2], strict=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fill(r: redis.Redis, n: int) -> None:
    from fastq import keys
    from fastq._codec import TaskMessage, encode_message

    pipe = r.pipeline(transaction=False)
    for i in range(n):
        tid = str(uuid.UUID(int=i + 1))
        msg = encode_message(TaskMessage(type="demo:noop", payload=b"", id=tid, queue=QUEUE, retry=25, timeout=1800))
        pipe.hset(keys.task_key(QUEUE, tid), mapping={"msg": msg, "state": "pending", "pending_since": str(i)})
        pipe.lpush(keys.pending_key(QUEUE), tid)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.sadd(keys.ALL_QUEUES, QUEUE)


def tree_loop(port: int, script: str, batch: int) -> int:
    """The drain loop of a tree variant, run with that tree's fastq (``PYTHONPATH``): its own
    ``settle_calls`` builds the acks (whatever its script's argument layout), as its workers do."""
    from fastq import keys
    from fastq._codec import decode_message
    from fastq._rdb import scripts as s
    from fastq._rdb.calls import execute
    from fastq._rdb.calls import script as call
    from fastq._rdb.outcome import Complete, Done
    from fastq._rdb.worker import dequeue_keys, settle_calls

    r = redis.Redis(port=port)
    token = "cost:1"
    dequeue = call(s.DEQUEUE, dequeue_keys(QUEUE), [batch, 1800, token, keys.task_key_prefix(QUEUE)])
    held: list[tuple[bytes, bytes]] = []
    while True:
        now = time.time()
        if script == "done":
            outcomes: list[Any] = [Done(QUEUE, tid.decode(), token) for tid, _ in held]
        else:  # complete: retention 1 day, the message as dequeued, no result
            outcomes = [Complete(QUEUE, tid.decode(), token, int(now) + 86400, decode_message(msg))
                        for tid, msg in held]
        held = claimed(execute(r, [*settle_calls(outcomes, now), dequeue])[-1])
        if not held:
            return 0


def _drain(r: redis.Redis, variant: str, batch: int) -> int:
    """The loop of the ``dequeue`` (never acked) and ``plain`` (Asynq's done) variants."""
    from bench.reference import PLAIN_ACK
    from fastq import keys
    from fastq._rdb import scripts as s
    from fastq._rdb.worker import STATS_TTL, dequeue_keys, utc_date

    dq_sha = r.script_load(s.DEQUEUE.source)
    dq_keys = dequeue_keys(QUEUE)
    dq_args = [batch, 1800, "cost:1", keys.task_key_prefix(QUEUE)]
    now = time.time()
    ack_keys = [keys.active_key(QUEUE), keys.lease_key(QUEUE), keys.processed_key(QUEUE, utc_date(now)),
                keys.processed_total_key(QUEUE)]
    ack_sha = r.script_load(PLAIN_ACK) if variant == "plain" else None
    acked = 0
    held: list[bytes] = []
    while True:
        pipe = r.pipeline(transaction=False)
        if held and ack_sha is not None:
            pipe.evalsha(ack_sha, 4, *ack_keys, int(now) + STATS_TTL, keys.task_key_prefix(QUEUE), *held)
            acked += len(held)
        pipe.evalsha(dq_sha, len(dq_keys), *dq_keys, *dq_args)
        held = [tid for tid, _ in claimed(pipe.execute()[-1])]
        if not held:
            return acked


def _supervisor_drain(r: redis.Redis, port: int, tree: str, args: argparse.Namespace) -> int:
    """Drain with ``fastq-supervisor`` of ``tree`` (2 processes x 100, fastq.demo's no-op handler
    registered for the queue's task type); the number of tasks acked."""
    from fastq import keys

    tree = os.path.abspath(tree)
    env = {**os.environ, "PYTHONPATH": tree}
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "fastq.demo:mux", "--redis-url",
                             f"redis://127.0.0.1:{port}/0", "--processes", "2", "--concurrency", "100",
                             "--batch-size", str(args.batch), "--queues", QUEUE, "--log-level", "WARNING"],
                            cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while int(r.get(keys.processed_total_key(QUEUE)) or 0) < args.tasks:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fastq-supervisor of {tree}: exited or timed out")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(60)
    return args.tasks


def measure(variant: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = _free_port()
    out = workdir / f"callgrind.{variant}.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    r = redis.Redis(port=port)
    try:
        for _ in range(300):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        _fill(r, args.tasks)
        if args.resident:  # other workers' leases: the lease zset never empties (as in a real drain)
            from fastq import keys

            r.zadd(keys.lease_key(QUEUE), {f"resident-{i}": 4e9 for i in range(args.resident)})
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        t0 = time.perf_counter()
        if variant.startswith("drain:"):  # the real thing: fastq-supervisor of that tree
            acked = _supervisor_drain(r, port, args.trees[variant[6:]], args)
        elif variant in args.trees:  # that tree's scripts and call building, in a process of its own
            tree = os.path.abspath(args.trees[variant])
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--loop", str(port), "--script", args.script,
                            "--batch", str(args.batch)], cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True)
            acked = args.tasks
        else:
            acked = _drain(r, variant, args.batch)
        elapsed = time.perf_counter() - t0
        stats = r.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        try:
            r.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
    finally:
        r.close()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = out.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"{variant}: no callgrind totals in {out}")
    skip = ("ping", "info", "hset", "lpush", "sadd", "script|load", "shutdown", "command|docs")
    inner = sum(v for k, v in calls.items() if k not in skip and k != "evalsha") + calls.get("hset", 0) - args.tasks
    return {"variant": variant, "tasks": args.tasks, "acked": acked, "ir": int(m.group(1)),
            "ir_per_task": int(m.group(1)) / args.tasks, "seconds": elapsed,
            "evalsha_per_task": calls.get("evalsha", 0) / args.tasks, "commands_per_task": inner / args.tasks,
            "calls": calls}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.redis_cost", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=200, help="tasks per dequeue and per ack")
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                   help="a fastq tree whose ack script to count; repeatable; default fastq=this tree")
    p.add_argument("--resident", type=int, default=1000,
                   help="lease entries of tasks held elsewhere, so the lease zset never empties (0: none)")
    p.add_argument("--script", choices=("done", "complete"), default="done")
    p.add_argument("-v", "--verbose", action="store_true", help="print every variant's command counts")
    p.add_argument("--loop", type=int, default=None, help=argparse.SUPPRESS)  # internal: tree_loop on this port
    p.add_argument("--variants", default=None, help="comma-separated subset: dequeue, plain, tree names")
    args = p.parse_args(argv)
    if args.loop:
        return tree_loop(args.loop, args.script, args.batch)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind (callgrind_control)", file=sys.stderr)
        return 2
    trees = args.trees = dict(v.split("=", 1) for v in args.tree) or {"fastq": str(REPO)}
    names = ["dequeue", "plain", *trees, *(f"drain:{t}" for t in trees)]
    if args.variants:
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="fastq-redis-cost-"))
    rows = []
    try:
        for name in names:
            if name.startswith("drain:") and args.script != "done":
                continue
            row = measure(name, args, workdir)
            rows.append(row)
            print(f"{name:<10} {row['ir_per_task']:>10,.0f} Ir/task  ({row['commands_per_task']:.2f} commands/task "
                  f"inside {row['evalsha_per_task']:.3f} EVALSHA/task; {row['seconds']:.1f} s under valgrind)",
                  flush=True)
            if args.verbose:
                print("    " + ", ".join(f"{k} {v}" for k, v in sorted(row["calls"].items(), key=lambda kv: -kv[1])))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = next((row for row in rows if row["variant"] == "dequeue"), None)
    if base is not None:
        print(f"\nack alone (minus the dequeue-only run), {args.script}.lua / plain, batch {args.batch}:")
        for row in rows:
            if row is not base and not row["variant"].startswith("drain:"):
                print(f"  {row['variant']:<10} {row['ir_per_task'] - base['ir_per_task']:>10,.0f} Ir/task")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
