"""fastq drain throughput as one factor at a time changes (``python -m bench.compare --scaling``).

Around a baseline of 100,000 no-op tasks with a 100 B payload in 1 queue, drained by
``fastq-supervisor --processes 2 --concurrency 100``, it varies:

* tasks queued: 10k / 100k / 1M
* worker processes: 1 / 2 / 4 (on this 2-core machine)
* payload: 100 B / 10 KB (20k tasks) / 1 MB (500 tasks; enqueued 8 per script call)
* queues: 1 / 10 / 100 (the tasks spread evenly, all queues weight 1)

Each run: FLUSHALL, enqueue with ``Client.enqueue_many`` in this process, start the supervisor, poll
the queues' ``processed`` counters until all are done. Every run is bounded by a timeout and
prints its figures; nothing is asserted. ``--scaling-max-tasks`` caps the task counts and
``--quick`` divides them by 100.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import fastq
from bench.compare import RESULTS, RedisServer, Workers, _fmt, machine_info, render_chart
from fastq import keys

BASE = {"tasks": 100_000, "processes": 2, "payload": 100, "queues": 1}
ENQUEUE_CALL_TASKS = 50_000  # tasks per enqueue_many call (bounds the client's memory for 1M)
CHUNK_BYTES = 8 * 2**20  # payload bytes per enqueue script call for big payloads


def plan(max_tasks: int, quick: bool) -> list:
    div = 100 if quick else 1
    runs = []

    def add(factor: str, label: str, **over) -> None:
        cfg = dict(BASE, **over)
        cfg["tasks"] = max(10, min(max_tasks, cfg["tasks"] // div))
        runs.append({"factor": factor, "label": label, **cfg})

    for n, label in ((10_000, "10k"), (100_000, "100k"), (1_000_000, "1M")):
        add("tasks queued", label, tasks=n)
    for p in (1, 2, 4):
        add("worker processes", f"{p} proc", processes=p)
    for size, n, label in ((100, 100_000, "100 B"), (10_000, 20_000, "10 KB"), (2**20, 500, "1 MB")):
        add("payload", label, payload=size, tasks=n)
    for q in (1, 10, 100):
        add("queues", f"{q} queue" + ("s" if q > 1 else ""), queues=q)
    return runs


def _same(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("tasks", "processes", "payload", "queues"))


def enqueue(url: str, cfg: dict) -> float:
    payload = b"x" * cfg["payload"]
    chunk = max(1, min(1000, CHUNK_BYTES // max(1, cfg["payload"])))
    client = fastq.Client(url, chunk_size=chunk)
    names = [f"bench{i}" for i in range(cfg["queues"])]
    per = [cfg["tasks"] // len(names) + (1 if i < cfg["tasks"] % len(names) else 0) for i in range(len(names))]
    task = fastq.Task("bench:noop", payload)
    t0 = time.perf_counter()
    for name, n in zip(names, per, strict=False):
        for start in range(0, n, ENQUEUE_CALL_TASKS):
            client.enqueue_many([task] * min(ENQUEUE_CALL_TASKS, n - start), queue=name)
    seconds = time.perf_counter() - t0
    client.close()
    return seconds


def one(rs: RedisServer, cfg: dict, log_root: Path) -> dict:
    rs.reset()
    n = cfg["tasks"]
    res = {"enqueue_s": enqueue(rs.url, cfg)}
    res["enqueue_per_s"] = n / res["enqueue_s"]
    res["redis_used_memory_mb"] = rs.client.info("memory")["used_memory"] / 2**20
    names = [f"bench{i}" for i in range(cfg["queues"])]
    queue_spec = ",".join(names)
    log_dir = log_root / f"{cfg['factor']}-{cfg['label']}".replace(" ", "_")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), BENCH_REDIS_URL=rs.url)
    argv = [sys.executable, "-m", "fastq.cli.supervisor", "bench.peers.peer_fastq:mux", "--redis-url", rs.url,
            "--processes", str(cfg["processes"]), "--concurrency", "100", "--queues", queue_spec, "--log-level",
            "WARNING"]
    res["command"] = " ".join(argv[2:6] + argv[8:12]) + (f" --queues <{len(names)} queues>" if len(names) > 3
                                                          else f" --queues {queue_spec}")
    counters = [keys.processed_total_key(q) for q in names]
    timeout = max(120.0, n / 2000)
    workers = Workers([argv], env, log_dir)
    try:
        start = time.perf_counter()
        first = None
        first_done = 0
        cpu0 = rcpu0 = 0.0
        while True:
            done = sum(int(v or 0) for v in rs.client.mget(counters))
            now = time.perf_counter()
            if first is None and done:
                first, first_done = now, done
                cpu0, rcpu0 = workers.cpu_seconds(), rs.cpu()
            if done >= n:
                break
            if workers.dead():
                raise RuntimeError(workers.dead())
            if now - start > timeout:
                raise RuntimeError(f"timed out after {timeout:.0f}s with {done:,} of {n:,} done")
            time.sleep(0.005)
        end = time.perf_counter()
        cpu1, rcpu1 = workers.cpu_seconds(), rs.cpu()
        steady_n = n - first_done
        drain = {"wall_s": end - start, "wall_per_s": n / (end - start), "first_done_after_s": first - start}
        if steady_n > 0 and end > first:
            drain.update(steady_per_s=steady_n / (end - first),
                         worker_cpu_us_per_task=(cpu1 - cpu0) / steady_n * 1e6,
                         redis_cpu_us_per_task=(rcpu1 - rcpu0) / steady_n * 1e6)
        else:
            drain["steady_per_s"] = drain["wall_per_s"]
        res["drain"] = drain
        res["worker_memory"] = {k: v for k, v in workers.memory().items() if k != "per_process"}
    finally:
        workers.stop()
    return res


def run_scaling(args) -> int:
    runs = plan(args.scaling_max_tasks, args.quick)
    rs = RedisServer(args.redis_url)
    log_root = Path(tempfile.mkdtemp(prefix="fastq-scaling-"))
    started = _dt.datetime.now()
    doc = {"date": started.isoformat(timespec="seconds"), "argv": sys.argv[1:], "baseline": BASE,
           "machine": machine_info(rs), "worker": "fastq-supervisor --concurrency 100 (batch-size 200)",
           "ping_rps_at_start": rs.ping_rate(), "runs": []}
    print(f"fastq scaling; redis {rs.version()}; single-connection PING {_fmt(doc['ping_rps_at_start'])}/s; "
          f"logs in {log_root}")
    header = f"{'factor':<17} {'run':<9} {'tasks':>9} {'proc':>4} {'payload':>8} {'queues':>6} | " \
             f"{'enqueue/s':>10} {'drain/s':>9} {'wall/s':>9} {'wCPU µs':>8} {'rCPU µs':>8} {'redis MB':>9}"
    print(header)
    print("-" * len(header))
    done_cfgs: list = []
    try:
        for cfg in runs:
            prev = next((d for d in done_cfgs if _same(d, cfg) and "error" not in d), None)
            if prev is not None:  # the baseline appears in several groups: run it once
                entry = dict(prev, factor=cfg["factor"], label=cfg["label"], same_run_as=prev["factor"])
            else:
                entry = dict(cfg)
                try:
                    entry.update(one(rs, cfg, log_root))
                except Exception as exc:  # noqa: BLE001 - print, carry on
                    entry["error"] = f"{type(exc).__name__}: {exc}"
                done_cfgs.append(entry)
            doc["runs"].append(entry)
            d = entry.get("drain", {})
            print(f"{cfg['factor']:<17} {cfg['label']:<9} {cfg['tasks']:>9,} {cfg['processes']:>4} "
                  f"{cfg['payload']:>8,} {cfg['queues']:>6} | "
                  + (f"FAILED: {entry['error']}" if "error" in entry else
                     f"{_fmt(entry['enqueue_per_s']):>10} {_fmt(d.get('steady_per_s')):>9} "
                     f"{_fmt(d.get('wall_per_s')):>9} {_fmt(d.get('worker_cpu_us_per_task'), '.1f'):>8} "
                     f"{_fmt(d.get('redis_cpu_us_per_task'), '.1f'):>8} {_fmt(entry['redis_used_memory_mb']):>9}"),
                  flush=True)
        doc["ping_rps_at_end"] = rs.ping_rate()
    finally:
        rs.stop()
    doc["duration_s"] = (_dt.datetime.now() - started).total_seconds()
    print(f"PING at end {_fmt(doc.get('ping_rps_at_end'))}/s. wCPU/rCPU: worker / Redis CPU µs per task during the "
          f"steady drain (CPU of all worker processes, over tasks finished)")
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = (args.name or started.strftime("%Y-%m-%d")) + "-scaling"
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    if not args.no_chart:
        err = render_chart(path, out_dir / f"{stem}.png", args.skip_install)
        print(err or f"wrote {out_dir / f'{stem}.png'}")
    return 0
