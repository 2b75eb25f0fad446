"""fastq side by side with Python peers: same workload, same private Redis, same run.

    .venv/bin/python -m bench.compare                     # all peers, 20,000 tasks each
    .venv/bin/python -m bench.compare --quick --only fastq
    .venv/bin/python -m bench.compare --peers fastq,rq --tasks 5000 --sweep
    .venv/bin/python -m bench.compare --scaling           # fastq only: tasks/processes/payload/queues

Every peer (arq, rq, saq, dramatiq, celery) gets a throwaway venv under
``$FASTQ_BENCH_CACHE`` (default ``~/.cache/fastq-bench/<peer>-<version>``), reused when present;
fastq runs from this interpreter. For each queue, against one private redis-server that is
flushed (FLUSHALL + CONFIG RESETSTAT) between queues:

a. enqueue N no-op tasks from one process (the peer's batch API where it has one);
b. start its workers on both cores and time until all N are done (wall time from start-up, and
   "steady" from the first finished task to the last), with worker and Redis CPU per task;
c. with the workers idle: Redis commands/s over 5 s (INFO commandstats), worker RSS (psutil,
   whole process tree), then idle pickup latency: one task at a time, 20-50 ms apart, each
   task records its start time; latency = handler start - return of the enqueue call;
d. the single-connection PING rate (``redis-benchmark -c 1``) before each queue, so figures can
   be read as ratios on this shared, noisy machine.

Writes ``bench/results/<date>.json`` (raw figures, machine, exact configuration) and a PNG chart
(``bench/chart.py``, run with matplotlib from a throwaway venv). A peer that fails is reported in
the table and the JSON; the others still run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import psutil
import redis

from bench._common import cpu_seconds, process_tree, redis_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CACHE = Path(os.environ.get("FASTQ_BENCH_CACHE", Path.home() / ".cache" / "fastq-bench"))
LAT_KEY = "bench:lat"
DONE_KEY = "bench:done"

# matplotlib (and py-spy, for profiling by hand) live in their own throwaway venv.
TOOLS_REQS = ["matplotlib==3.11.2", "py-spy==0.4.3"]


# --------------------------------------------------------------------------- peers

def _fastq_done(r: redis.Redis) -> int:
    return int(r.get("asynq:{bench}:processed") or 0)


def _arq_remaining(r: redis.Redis) -> int:
    return r.zcard("arq:queue")


def _saq_remaining(r: redis.Redis) -> int:
    return r.zcard("saq:default:incomplete")


def _dramatiq_remaining(r: redis.Redis) -> int:
    return r.hlen("dramatiq:default.msgs")


def _rq_done(r: redis.Redis) -> int:
    names = r.smembers("rq:workers")
    if not names:
        return 0
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.hget(name, "successful_job_count")
    return sum(int(v or 0) for v in pipe.execute())


def _counter_done(r: redis.Redis) -> int:
    return int(r.get(DONE_KEY) or 0)


@dataclass
class Variant:
    """One worker configuration: the commands to start (each a process tree) and extra env."""

    desc: str
    commands: Callable[["Peer", str], list]
    env: dict = field(default_factory=dict)


@dataclass
class Peer:
    name: str
    version: str
    reqs: list  # pip requirements; empty for fastq (runs from this interpreter)
    detect: str  # how completion is detected, in words
    done: Optional[Callable] = None  # done count read from Redis ...
    remaining: Optional[Callable] = None  # ... or tasks left, read from Redis
    variants: dict = field(default_factory=dict)
    default_variant: str = ""
    notes: str = ""
    kinds: tuple = ()  # no-op handler kinds of the peer module (KINDS) when it has both sync and async
    foreign_pickup: bool = False  # fastq: pickup of tasks written in Go's layout by a raw client

    @property
    def venv(self) -> Optional[Path]:
        return None if not self.reqs else CACHE / f"{self.name}-{self.version}"

    @property
    def python(self) -> str:
        return sys.executable if self.venv is None else str(self.venv / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(Path(self.python).parent / name)


def _fastq_cmd(processes: int, concurrency: int):
    def commands(peer: Peer, url: str) -> list:
        return [[peer.python, "-m", "fastq.cli.supervisor", "bench.peers.peer_fastq:mux", "--redis-url", url,
                 "--processes", str(processes), "--concurrency", str(concurrency), "--queues", "bench",
                 "--log-level", "WARNING"]]
    return commands


def _arq_cmd(processes: int):
    def commands(peer: Peer, url: str) -> list:
        return [[peer.python, "-m", "bench.peers.run", "arq", "worker"] for _ in range(processes)]
    return commands


def _rq_cmd(worker_class: str, processes: int):
    def commands(peer: Peer, url: str) -> list:
        return [[peer.bin("rq"), "worker-pool", "-n", str(processes), "-w", worker_class, "--url", url,
                 "--logging-level", "WARNING", "default"]]
    return commands


def _saq_cmd(processes: int):
    def commands(peer: Peer, url: str) -> list:
        return [[peer.bin("saq"), "bench.peers.peer_saq.settings", "--workers", str(processes), "--quiet"]]
    return commands


def _dramatiq_cmd(processes: int, threads: int):
    def commands(peer: Peer, url: str) -> list:
        return [[peer.bin("dramatiq"), "bench.peers.peer_dramatiq", "-p", str(processes), "-t", str(threads)]]
    return commands


def _celery_cmd(pool: str, concurrency: int, processes: int = 1):
    def commands(peer: Peer, url: str) -> list:
        return [[peer.bin("celery"), "-A", "bench.peers.peer_celery", "worker", "-P", pool, "-c", str(concurrency),
                 "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
                 "-n", f"bench{i}@%h", "-Q", "celery"] for i in range(processes)]
    return commands


def build_peers() -> dict:
    peers = [
        Peer("fastq", _fastq_version(), [],
             "asynq:{bench}:processed (fastq's own counter, written with the batched ack)",
             done=_fastq_done,
             variants={"p2c100": Variant("fastq-supervisor --processes 2 --concurrency 100 (batch-size 200, "
                                         "defaults: poll-interval 1 s, idle workers woken by fastq_notify)",
                                         _fastq_cmd(2, 100))},
             default_variant="p2c100", kinds=("async", "sync"), foreign_pickup=True),
        Peer("arq", "0.28.0", ["arq==0.28.0", "hiredis==3.5.0"],
             "ZCARD arq:queue (arq removes a job from its queue sorted set when it finishes)",
             remaining=_arq_remaining,
             variants={
                 "2x_max_jobs10": Variant("2 worker processes (arq.worker.run_worker), max_jobs=10 (default), "
                                          "keep_result=0, poll_delay 0.5 s (default)", _arq_cmd(2),
                                          {"BENCH_CONCURRENCY": "10"}),
                 "2x_max_jobs100": Variant("2 worker processes (arq.worker.run_worker), max_jobs=100, keep_result=0, "
                                           "poll_delay 0.5 s (default)", _arq_cmd(2), {"BENCH_CONCURRENCY": "100"}),
                 "2x_max_jobs500": Variant("2 worker processes (arq.worker.run_worker), max_jobs=500, keep_result=0, "
                                           "poll_delay 0.5 s (default)", _arq_cmd(2), {"BENCH_CONCURRENCY": "500"}),
                 "2x_max_jobs100_poll50ms": Variant("2 worker processes (arq.worker.run_worker), max_jobs=100, "
                                                    "keep_result=0, poll_delay 0.05 s", _arq_cmd(2),
                                                    {"BENCH_CONCURRENCY": "100", "BENCH_POLL_DELAY": "0.05"}),
             }, default_variant="2x_max_jobs100"),
        Peer("rq", "3.0.0", ["rq==3.0.0", "hiredis==3.5.0"],
             "sum of successful_job_count over rq:workers (RQ's own per-worker counter)",
             done=_rq_done,
             variants={
                 "pool2_simple": Variant("rq worker-pool -n 2 -w rq.worker.SimpleWorker (no fork per job), "
                                         "result_ttl=0", _rq_cmd("rq.worker.SimpleWorker", 2)),
                 "pool2_fork": Variant("rq worker-pool -n 2 (default Worker: fork per job), result_ttl=0",
                                       _rq_cmd("rq.worker.Worker", 2)),
             }, default_variant="pool2_simple", kinds=("sync", "async")),
        Peer("saq", "0.26.4", ["saq==0.26.4", "redis==8.1.0", "hiredis==3.5.0", "typing_extensions==4.16.0"],
             "ZCARD saq:default:incomplete (SAQ's own set of unfinished jobs)",
             remaining=_saq_remaining,
             variants={
                 "w2c10": Variant("saq --workers 2, concurrency 10 (default), job ttl=-1", _saq_cmd(2),
                                  {"BENCH_CONCURRENCY": "10"}),
                 "w2c50": Variant("saq --workers 2, concurrency 50, job ttl=-1", _saq_cmd(2),
                                  {"BENCH_CONCURRENCY": "50"}),
                 # concurrency 200 fails here: redis-py 8's asyncio pool raises MaxConnectionsError
                 # ("Too many connections") and the workers spin with jobs stuck active.
                 "w2c100": Variant("saq --workers 2, concurrency 100, job ttl=-1", _saq_cmd(2),
                                   {"BENCH_CONCURRENCY": "100"}),
             }, default_variant="w2c50", kinds=("async", "sync")),
        Peer("dramatiq", "2.2.1", ["dramatiq[redis]==2.2.1", "redis==8.1.0", "hiredis==3.5.0"],
             "HLEN dramatiq:default.msgs (a message leaves Dramatiq's hash when it is acked)",
             remaining=_dramatiq_remaining,
             variants={
                 "p2t8": Variant("dramatiq -p 2 -t 8 (default threads)", _dramatiq_cmd(2, 8)),
                 "p2t1": Variant("dramatiq -p 2 -t 1", _dramatiq_cmd(2, 1)),
                 "p2t32": Variant("dramatiq -p 2 -t 32", _dramatiq_cmd(2, 32)),
                 "p2t64": Variant("dramatiq -p 2 -t 64", _dramatiq_cmd(2, 64)),
             }, default_variant="p2t8", kinds=("sync", "async")),
        Peer("celery", "5.7.0", ["celery[redis]==5.7.0", "redis==8.1.0", "hiredis==3.5.0"],
             "INCR bench:done in the task (Celery keeps no count in Redis; +1 round trip per task)",
             done=_counter_done,
             variants={
                 "prefork2": Variant("celery worker -P prefork -c 2, prefetch multiplier 4, "
                                     "--without-gossip/mingle/heartbeat", _celery_cmd("prefork", 2)),
                 "prefork2_pf64": Variant("celery worker -P prefork -c 2, prefetch multiplier 64, "
                                          "--without-gossip/mingle/heartbeat", _celery_cmd("prefork", 2),
                                          {"BENCH_PREFETCH": "64"}),
                 "solo_x2": Variant("2 x celery worker -P solo, prefetch multiplier 64, "
                                    "--without-gossip/mingle/heartbeat", _celery_cmd("solo", 1, 2),
                                    {"BENCH_PREFETCH": "64"}),
                 "threads_x2": Variant("2 x celery worker -P threads -c 8, prefetch multiplier 4, "
                                       "--without-gossip/mingle/heartbeat", _celery_cmd("threads", 8, 2)),
             }, default_variant="prefork2_pf64"),
    ]
    return {p.name: p for p in peers}


def _fastq_version() -> str:
    try:
        from importlib.metadata import version

        return version("fastq-tasks")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "repo"


# --------------------------------------------------------------------------- venvs

def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(name: str, reqs: list, skip_install: bool) -> Path:
    """A venv under CACHE named ``name`` with ``reqs`` installed; reused when its marker matches."""
    venv = CACHE / name
    marker = venv / ".fastq-bench-reqs"
    want = "\n".join(reqs)
    if marker.exists() and marker.read_text() == want:
        return venv
    if skip_install:
        raise RuntimeError(f"{venv} is missing or out of date and --skip-install was given")
    print(f"  installing {' '.join(reqs)} into {venv} ...", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *reqs],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install failed: {proc.stderr.strip()[-2000:]}")
    marker.write_text(want)
    return venv


def pip_freeze(python: str) -> list:
    out = subprocess.run([python, "-m", "pip", "freeze", "--disable-pip-version-check"], capture_output=True,
                         text=True)
    return [line for line in out.stdout.splitlines() if line and not line.startswith("-e ")]


# --------------------------------------------------------------------------- redis helpers

class RedisServer:
    """A private redis-server (fastq.devserver.DevServer), or a given URL."""

    def __init__(self, url: Optional[str]) -> None:
        self.server = None
        if url is None:
            from fastq.devserver import DevServer

            self.server = DevServer().start()
            url = self.server.url
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.port = self.client.connection_pool.connection_kwargs.get("port", 6379)
        self.host = self.client.connection_pool.connection_kwargs.get("host", "127.0.0.1")

    def reset(self) -> None:
        self.client.flushall()
        self.client.config_resetstat()

    def ping_rate(self) -> Optional[float]:
        """Single-connection PING requests/s (redis-benchmark -c 1 -n 20000 -t ping), mean of INLINE and MBULK."""
        exe = shutil.which("redis-benchmark")
        if exe is None:
            return None
        out = subprocess.run([exe, "-h", str(self.host), "-p", str(self.port), "-c", "1", "-n", "20000", "-t", "ping",
                              "-q"], capture_output=True, text=True, timeout=120).stdout
        rates = [float(m) for m in re.findall(r"PING_\w+: ([\d.]+) requests per second", out)]
        return statistics.mean(rates) if rates else None

    def commandstats(self) -> dict:
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in self.client.info("commandstats").items()}

    def cpu(self) -> float:
        return redis_cpu_seconds(self.client)

    def version(self) -> str:
        return self.client.info("server")["redis_version"]

    def stop(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


# --------------------------------------------------------------------------- processes

class Workers:
    """The worker process trees of one peer, each started in its own session (process group)."""

    def __init__(self, commands: list, env: dict, log_dir: Path) -> None:
        self.procs = []
        self.logs = []
        for i, argv in enumerate(commands):
            log = open(log_dir / f"worker{i}.log", "wb")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def tree(self) -> list:
        return process_tree(self.procs)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.tree())

    def memory(self) -> dict:
        per = []
        for proc in self.tree():
            try:
                mem = proc.memory_full_info()
                per.append({"pid": proc.pid, "name": " ".join(proc.cmdline()[:4])[:120],
                            "rss_mb": mem.rss / 2**20, "uss_mb": mem.uss / 2**20})
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        n = max(1, len(per))
        return {"rss_mb_total": sum(p["rss_mb"] for p in per), "uss_mb_total": sum(p["uss_mb"] for p in per),
                "processes": len(per), "rss_mb_per_process": sum(p["rss_mb"] for p in per) / n,
                "uss_mb_per_process": sum(p["uss_mb"] for p in per) / n, "per_process": per}

    def dead(self) -> Optional[str]:
        for p in self.procs:
            if p.poll() is not None:
                return f"worker command exited early with code {p.returncode}"
        return None

    def stop(self, timeout: float = 15.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:  # whatever is left of each group we started
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if p.poll() is None:
                p.wait(5)
        for log in self.logs:
            log.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def run_peer_cmd(peer: Peer, env: dict, args: list, timeout: float) -> dict:
    """``python -m bench.peers.run PEER ...`` in the peer's venv; return its RESULT json."""
    proc = subprocess.run([peer.python, "-m", "bench.peers.run", peer.name, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(args[:1])} failed (code {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()[-1500:]}")


def _percentile(values: list, q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# --------------------------------------------------------------------------- one peer

@dataclass
class Settings:
    tasks: int
    samples: int
    idle_window: float = 5.0
    settle: float = 3.0
    drain_timeout: float = 600.0
    foreign_samples: int = 20
    foreign_pause: tuple = (1.0, 1.6)


def _counts(peer: Peer, r: redis.Redis, n: int) -> int:
    if peer.done is not None:
        return peer.done(r)
    return n - peer.remaining(r)


def measure_drain(peer: Peer, rs: RedisServer, workers: Workers, n: int, timeout: float, log_dir: Path) -> dict:
    r = rs.client
    start = time.perf_counter()
    first = None
    first_done = 0
    cpu0 = rcpu0 = None
    done = 0
    while True:
        done = _counts(peer, r, n)
        now = time.perf_counter()
        if first is None and done > 0:
            first, first_done = now, done
            cpu0, rcpu0 = workers.cpu_seconds(), rs.cpu()
        if done >= n:
            break
        err = workers.dead()
        if err:
            raise RuntimeError(f"{err}; {done:,} of {n:,} done; log tail:\n{_tail(log_dir / 'worker0.log')}")
        if now - start > timeout:
            raise RuntimeError(f"drain timed out after {timeout:.0f}s with {done:,} of {n:,} done")
        time.sleep(0.005)
    end = time.perf_counter()
    cpu1, rcpu1 = workers.cpu_seconds(), rs.cpu()
    steady_n = n - first_done
    steady_s = end - first
    out = {"tasks": n, "wall_s": end - start, "wall_per_s": n / (end - start), "steady_s": steady_s,
           "first_done_after_s": first - start}
    if steady_n > 0 and steady_s > 0:
        out["steady_per_s"] = steady_n / steady_s
        out["worker_cpu_us_per_task"] = (cpu1 - cpu0) / steady_n * 1e6
        out["redis_cpu_us_per_task"] = (rcpu1 - rcpu0) / steady_n * 1e6
    else:
        out["steady_per_s"] = n / (end - start)
    return out


def _monitor(rs: RedisServer, window: float) -> dict:
    """Top-level requests (network round trips) per command over ``window`` s, read with MONITOR.

    INFO commandstats also counts the commands that Lua scripts run; MONITOR marks those
    ``[0 lua]``, so the two together separate round trips from the work done per round trip.
    """
    import socket

    counts: dict = {}
    with socket.create_connection((rs.host, rs.port), timeout=1.0) as sock:
        sock.sendall(b"MONITOR\r\n")
        buf = b""
        end = time.monotonic() + window
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\r\n")
            for line in lines:
                m = re.match(rb'\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
                if m and m.group(1) != b"lua":
                    name = m.group(2).decode().lower()
                    counts[name] = counts.get(name, 0) + 1
    return counts


def measure_idle_commands(rs: RedisServer, window: float) -> dict:
    """Commands Redis executed while the workers were idle: all (commandstats) and top-level (MONITOR)."""
    before = rs.commandstats()
    t0 = time.perf_counter()
    time.sleep(window)
    after = rs.commandstats()
    elapsed = time.perf_counter() - t0
    by_cmd = {k: (after.get(k, 0) - before.get(k, 0)) / elapsed for k in after if k not in ("info", "config|resetstat")}
    by_cmd = {k: round(v, 2) for k, v in sorted(by_cmd.items(), key=lambda kv: -kv[1]) if v > 0}
    top = _monitor(rs, window)
    top.pop("info", None)
    top = {k: round(v / window, 2) for k, v in sorted(top.items(), key=lambda kv: -kv[1])}
    return {"window_s": elapsed, "per_s": sum(by_cmd.values()), "by_command_per_s": by_cmd,
            "requests_per_s": sum(top.values()), "requests_by_command_per_s": top,
            "note": "per_s counts every command Redis executed (also those run inside Lua scripts); "
                    "requests_per_s counts top-level requests (round trips), from MONITOR over a second window"}


def measure_latency(peer: Peer, rs: RedisServer, env: dict, samples: int) -> dict:
    r = rs.client
    r.delete(LAT_KEY)
    out = run_peer_cmd(peer, env, ["latency", "--samples", str(samples)], timeout=60 + samples)
    calls = out["calls"]
    deadline = time.monotonic() + 30
    while r.llen(LAT_KEY) < samples and time.monotonic() < deadline:
        time.sleep(0.05)
    starts = {}
    for item in r.lrange(LAT_KEY, 0, -1):
        i, t = item.decode().split()
        starts.setdefault(int(i), float(t))
    after_return = [(starts[i] - c[1]) * 1e3 for i, c in enumerate(calls) if i in starts]
    after_call = [(starts[i] - c[0]) * 1e3 for i, c in enumerate(calls) if i in starts]
    enqueue_ms = [(c[1] - c[0]) * 1e3 for c in calls]
    res = {"samples": samples, "received": len(after_return), "gap_ms": [20, 50],
           "enqueue_call_ms_p50": _percentile(enqueue_ms, 0.5)}
    if after_return:
        res.update(p50_ms=_percentile(after_return, 0.5), p90_ms=_percentile(after_return, 0.9),
                   p99_ms=_percentile(after_return, 0.99), max_ms=max(after_return), min_ms=min(after_return),
                   mean_ms=statistics.mean(after_return),
                   from_call_p50_ms=_percentile(after_call, 0.5), from_call_p99_ms=_percentile(after_call, 0.99),
                   raw_ms=[round(x, 3) for x in after_return])
    return res


def peer_env(rs: RedisServer, variant: Optional[Variant] = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "VIRTUAL_ENV", "PYTHONHOME"))}
    env["PYTHONPATH"] = str(REPO)
    env["BENCH_REDIS_URL"] = rs.url
    env["PYTHONUNBUFFERED"] = "1"
    if variant is not None:
        env.update(variant.env)
    return env


def drain_kinds(peer: Peer, variant_name: str, rs: RedisServer, st: Settings, log_root: Path) -> dict:
    """For a peer with both handler kinds: the no-op drain with each, back to back (fresh workers
    and a flushed Redis each), PING rate beside each."""
    out = {}
    for kind in peer.kinds:
        res = run_one(peer, variant_name, rs, st, False, log_root, kind=kind)
        out[kind] = {"ping_rps": res["ping_rps"], **{k: v for k, v in res["drain"].items() if k != "detection"}}
    return out


def measure_foreign_pickup(rs: RedisServer, st: Settings) -> dict:
    """fastq only: pickup of tasks written in Go Asynq's layout by a raw client (no fastq_notify),
    by idle workers polling (``--poll-interval 1``) and with ``--keyspace-wakeup`` (bench/pickup.py)."""
    from bench.pickup import foreign_pickups

    out: dict = {"samples": st.foreign_samples, "pause_s": list(st.foreign_pause), "poll_interval_s": 1.0,
                 "writer": "raw redis-py MULTI: SADD asynq:queues, HSET task hash, LPUSH pending (Go's layout)"}
    for name, wakeup in (("default", False), ("keyspace_wakeup", True)):
        rs.reset()
        ms = [x * 1e3 for x in foreign_pickups(rs.url, st.foreign_samples, st.foreign_pause, wakeup)]
        out[name] = {"p50_ms": _percentile(ms, 0.5), "p90_ms": _percentile(ms, 0.9), "p99_ms": _percentile(ms, 0.99),
                     "max_ms": max(ms), "raw_ms": [round(x, 3) for x in ms]}
    return out


def run_one(peer: Peer, variant_name: str, rs: RedisServer, st: Settings, full: bool, log_root: Path,
            kind: str = "") -> dict:
    """Enqueue + drain (+ idle, RSS, latency when ``full``) of one peer configuration; ``kind``: the
    no-op handler kind (peers with ``kinds``; default: the peer's default)."""
    variant = peer.variants[variant_name]
    log_dir = log_root / f"{peer.name}-{variant_name}{'-' + kind if kind else ''}"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = peer_env(rs, variant)
    rs.reset()
    res: dict = {"variant": variant_name, "config": variant.desc, "ping_rps": rs.ping_rate()}
    rs.reset()
    enq = run_peer_cmd(peer, env, ["enqueue", "--n", str(st.tasks), *(["--kind", kind] if kind else [])],
                       timeout=max(120, st.tasks / 50))
    res["enqueue"] = {"tasks": st.tasks, "seconds": enq["seconds"], "per_s": st.tasks / enq["seconds"],
                      "method": enq["method"], "redis_used_memory_mb": rs.client.info("memory")["used_memory"] / 2**20}
    commands = variant.commands(peer, rs.url)
    res["worker_commands"] = [" ".join(c) for c in commands]
    workers = Workers(commands, env, log_dir)
    try:
        res["drain"] = measure_drain(peer, rs, workers, st.tasks, st.drain_timeout, log_dir)
        res["drain"]["detection"] = peer.detect
        if full:
            time.sleep(st.settle)
            res["idle_commands"] = measure_idle_commands(rs, st.idle_window)
            res["memory"] = workers.memory()
            res["latency"] = measure_latency(peer, rs, env, st.samples)
            res["memory_after_latency"] = {k: v for k, v in workers.memory().items() if k != "per_process"}
        if workers.dead():
            res["warning"] = workers.dead()
    finally:
        workers.stop()
    if full and len(peer.kinds) > 1:
        res["drain_by_kind"] = drain_kinds(peer, variant_name, rs, st, log_root)
        res["drain_by_kind_note"] = (f"no-op drains with each handler kind, back to back; the main drain "
                                     f"above used {peer.kinds[0]!r}")
    if full and peer.foreign_pickup and st.foreign_samples > 0:
        res["foreign_pickup"] = measure_foreign_pickup(rs, st)
    return res


# --------------------------------------------------------------------------- report

def _fmt(v: Optional[float], spec: str = ",.0f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def _p50_p99(d: Optional[dict]) -> str:
    return "-" if not d else f"{_fmt(d.get('p50_ms'), '.1f')} / {_fmt(d.get('p99_ms'), '.1f')}"


def table(results: dict, ping: Optional[float]) -> str:
    head = ("queue", "version", "enqueue/s", "drain/s", "drain wall/s", "sync / async drain/s", "pickup p50/p99 ms",
            "foreign pickup p50/p99 ms", "+ keyspace-wakeup", "RSS MB (procs)", "RSS / USS MB per proc",
            "idle cmds/s (reqs/s)", "ping/s")
    rows = [head]
    for name, r in results.items():
        if "error" in r:
            rows.append((name, r.get("version", "?"), "FAILED: " + r["error"].splitlines()[0][:70],
                         *[""] * (len(head) - 3)))
            continue
        lat = r.get("latency", {})
        mem = r.get("memory", {})
        kinds = r.get("drain_by_kind", {})
        foreign = r.get("foreign_pickup", {})
        rows.append((name, r["version"], _fmt(r["enqueue"]["per_s"]), _fmt(r["drain"]["steady_per_s"]),
                     _fmt(r["drain"]["wall_per_s"]),
                     f"{_fmt(kinds['sync'].get('steady_per_s'))} / {_fmt(kinds['async'].get('steady_per_s'))}"
                     if "sync" in kinds and "async" in kinds else "-",
                     f"{_fmt(lat.get('p50_ms'), '.1f')} / {_fmt(lat.get('p99_ms'), '.1f')}",
                     _p50_p99(foreign.get("default")), _p50_p99(foreign.get("keyspace_wakeup")),
                     f"{_fmt(mem.get('rss_mb_total'), '.0f')} ({mem.get('processes', '-')})",
                     f"{_fmt(mem.get('rss_mb_per_process'), '.1f')} / {_fmt(mem.get('uss_mb_per_process'), '.1f')}",
                     f"{_fmt(r.get('idle_commands', {}).get('per_s'), ',.1f')} "
                     f"({_fmt(r.get('idle_commands', {}).get('requests_per_s'), ',.1f')})", _fmt(r.get("ping_rps"))))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    if ping:
        lines.append(f"redis-benchmark -c 1 -n 20000 -t ping at start: {ping:,.0f} requests/s "
                     f"(≈ {1e6 / ping:.0f} µs per round trip)")
    return "\n".join(lines)


def machine_info(rs: RedisServer) -> dict:
    return {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "redis_server": rs.version(), "cpu_model": _cpu_model(),
            "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "loadavg_at_start": os.getloadavg(), "fastq_source": fastq_source()}


def fastq_source() -> dict:
    """Which fastq was measured: the commit and any uncommitted changes under fastq/ (shared work tree)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    import fastq

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain", "--", "fastq").splitlines(),
            "codec": "Cython" if fastq.USING_SPEEDUPS else "pure Python"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def render_chart(json_path: Path, png_path: Path, skip_install: bool) -> Optional[str]:
    try:
        venv = ensure_venv("tools", TOOLS_REQS, skip_install)
        proc = subprocess.run([str(venv / "bin" / "python"), str(REPO / "bench" / "chart.py"), str(json_path),
                               str(png_path)], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            return f"chart failed: {proc.stderr.strip()[-500:]}"
        return None
    except Exception as exc:  # noqa: BLE001 - the chart is optional
        return f"chart failed: {exc}"


# --------------------------------------------------------------------------- main

def compare(args: argparse.Namespace) -> int:
    peers = build_peers()
    names = ["fastq"] if args.only == "fastq" else [p.strip() for p in args.peers.split(",") if p.strip()]
    if args.only and args.only != "fastq":
        names = [args.only]
    unknown = [n for n in names if n not in peers]
    if unknown:
        print(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(peers)}", file=sys.stderr)
        return 2
    chosen_variants = dict(v.split("=", 1) for v in args.variant)
    st = Settings(tasks=args.tasks, samples=args.samples, idle_window=args.idle_window, settle=args.settle,
                  drain_timeout=max(120.0, args.tasks / 50), foreign_samples=args.foreign_samples)
    if args.quick:
        st.tasks = args.tasks if args.tasks_given else 500
        st.samples = args.samples if args.samples_given else 20
        st.idle_window = min(st.idle_window, 2.0)
        st.settle = min(st.settle, 1.0)
        st.foreign_samples = args.foreign_samples if args.foreign_samples_given else 3
        st.foreign_pause = (0.2, 0.4)
    rs = RedisServer(args.redis_url)
    log_root = Path(tempfile.mkdtemp(prefix="fastq-compare-"))
    started = _dt.datetime.now()
    doc: dict = {"date": started.isoformat(timespec="seconds"), "argv": sys.argv[1:], "tasks": st.tasks,
                 "latency_samples": st.samples, "foreign_pickup_samples": st.foreign_samples,
                 "idle_window_s": st.idle_window, "workload": "no-op tasks",
                 "machine": machine_info(rs), "peers": {}}
    try:
        ping = rs.ping_rate()
        doc["ping_rps_at_start"] = ping
        print(f"redis {rs.version()} at {rs.url}; single-connection PING: {_fmt(ping)} requests/s; "
              f"{st.tasks:,} tasks per queue; logs in {log_root}", flush=True)
        for name in names:
            peer = peers[name]
            entry: dict = {"version": peer.version, "completion_detection": peer.detect}
            doc["peers"][name] = entry
            try:
                if peer.venv is not None:
                    ensure_venv(f"{peer.name}-{peer.version}", peer.reqs, args.skip_install)
                entry["packages"] = pip_freeze(peer.python) if peer.venv is not None else _fastq_packages()
                variant = chosen_variants.get(name, peer.default_variant)
                if args.sweep and len(peer.variants) > 1 and name not in chosen_variants:
                    sweep_st = Settings(tasks=args.sweep_tasks, samples=0,
                                        drain_timeout=max(120.0, args.sweep_tasks / 40))
                    entry["sweep"] = {}
                    for vname in peer.variants:
                        print(f"[{name}] sweep {vname}: {peer.variants[vname].desc}", flush=True)
                        try:
                            sres = run_one(peer, vname, rs, sweep_st, False, log_root)
                            entry["sweep"][vname] = sres
                            print(f"    enqueue {_fmt(sres['enqueue']['per_s'])}/s, drain "
                                  f"{_fmt(sres['drain']['steady_per_s'])}/s (ping {_fmt(sres['ping_rps'])}/s)",
                                  flush=True)
                        except Exception as exc:  # noqa: BLE001
                            entry["sweep"][vname] = {"error": str(exc)}
                            print(f"    failed: {exc}", flush=True)
                    ok = {k: v for k, v in entry["sweep"].items() if "drain" in v}
                    if ok:
                        variant = max(ok, key=lambda k: ok[k]["drain"]["steady_per_s"])
                print(f"[{name}] {peer.variants[variant].desc}", flush=True)
                res = run_one(peer, variant, rs, st, True, log_root)
                entry.update(res)
                lat = res.get("latency", {})
                print(f"    enqueue {_fmt(res['enqueue']['per_s'])}/s ({res['enqueue']['method']}); drain "
                      f"{_fmt(res['drain']['steady_per_s'])}/s steady, {_fmt(res['drain']['wall_per_s'])}/s wall; "
                      f"pickup p50 {_fmt(lat.get('p50_ms'), '.2f')} ms p99 {_fmt(lat.get('p99_ms'), '.2f')} ms; "
                      f"RSS {_fmt(res['memory']['rss_mb_total'], '.0f')} MB "
                      f"({_fmt(res['memory']['rss_mb_per_process'], '.1f')} RSS / "
                      f"{_fmt(res['memory']['uss_mb_per_process'], '.1f')} USS per process); idle "
                      f"{_fmt(res['idle_commands']['per_s'], '.1f')} cmds/s "
                      f"({_fmt(res['idle_commands']['requests_per_s'], '.1f')} requests/s); "
                      f"ping {_fmt(res['ping_rps'])}/s",
                      flush=True)
                for kind, d in res.get("drain_by_kind", {}).items():
                    print(f"    {kind} no-op handler: drain {_fmt(d.get('steady_per_s'))}/s, worker "
                          f"{_fmt(d.get('worker_cpu_us_per_task'), '.1f')} µs/task (ping {_fmt(d['ping_rps'])}/s)",
                          flush=True)
                for name_, d in res.get("foreign_pickup", {}).items():
                    if isinstance(d, dict) and "p50_ms" in d:
                        print(f"    foreign pickup ({name_}): p50 {_fmt(d['p50_ms'], '.2f')} ms "
                              f"p99 {_fmt(d['p99_ms'], '.2f')} ms", flush=True)
            except Exception as exc:  # noqa: BLE001 - one peer's failure is reported, not fatal
                entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["traceback"] = traceback.format_exc()
                print(f"    FAILED: {entry['error']}", flush=True)
        doc["ping_rps_at_end"] = rs.ping_rate()
        doc["loadavg_at_end"] = os.getloadavg()
    finally:
        rs.stop()
    doc["duration_s"] = (_dt.datetime.now() - started).total_seconds()
    print()
    print(table(doc["peers"], doc.get("ping_rps_at_start")))
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.name or started.strftime("%Y-%m-%d")
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {json_path}")
    if not args.no_chart:
        err = render_chart(json_path, out_dir / f"{stem}.png", args.skip_install)
        print(err or f"wrote {out_dir / f'{stem}.png'}")
    shutil.rmtree(log_root, ignore_errors=True) if not args.keep_logs else None
    return 0


def _fastq_packages() -> list:
    return [line for line in pip_freeze(sys.executable) if line.split("==")[0].lower() in
            ("redis", "hiredis", "uvloop", "psutil", "fastq-tasks", "setproctitle")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=None, help="no-op tasks per queue (default 20000; --quick: 500)")
    p.add_argument("--peers", default="fastq,arq,rq,saq,dramatiq,celery", help="comma-separated queues to run")
    p.add_argument("--only", default=None, help="run just this queue (e.g. --only fastq)")
    p.add_argument("--variant", action="append", default=[], metavar="PEER=NAME",
                   help="worker configuration of a peer (see build_peers); repeatable")
    p.add_argument("--sweep", action="store_true",
                   help="drain every configuration of each peer with --sweep-tasks first, then measure the fastest")
    p.add_argument("--sweep-tasks", type=int, default=3000)
    p.add_argument("--samples", type=int, default=None, help="idle pickup latency samples (default 200; --quick: 20)")
    p.add_argument("--foreign-samples", type=int, default=None,
                   help="fastq: pickups of tasks written in Go's layout, per setting (default 20; --quick: 3)")
    p.add_argument("--idle-window", type=float, default=5.0, help="seconds of idle Redis command counting")
    p.add_argument("--settle", type=float, default=3.0, help="seconds idle after the drain before idle measurements")
    p.add_argument("--skip-install", action="store_true",
                   help="use the cached venvs; fail a peer whose venv is missing")
    p.add_argument("--quick", action="store_true", help="smoke run: 500 tasks, 20 latency samples, short idle window")
    p.add_argument("--redis-url", default=None, help="use this Redis (it is FLUSHALLed!) instead of a private one")
    p.add_argument("--out-dir", default=None, help=f"where to write the JSON/PNG (default {RESULTS})")
    p.add_argument("--name", default=None, help="file name stem (default: today's date)")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--keep-logs", action="store_true", help="keep the worker logs (temp dir printed at start)")
    p.add_argument("--scaling", action="store_true", help="fastq only: drain vs tasks, processes, payload, queues")
    p.add_argument("--scaling-max-tasks", type=int, default=1_000_000, help="cap on tasks per scaling run")
    return p


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.tasks_given = args.tasks is not None
    args.samples_given = args.samples is not None
    args.foreign_samples_given = args.foreign_samples is not None
    if args.foreign_samples is None:
        args.foreign_samples = 20
    if args.tasks is None:
        args.tasks = 20_000
    if args.samples is None:
        args.samples = 200
    if args.scaling:
        from bench.scaling import run_scaling

        return run_scaling(args)
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
