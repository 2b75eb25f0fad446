"""The fault-matrix harness (README "Guarantees", docs/guarantees.md): Redis under test, ledger, supervisor, checker.

Every row: start a private redis-server, enqueue N tasks (each recorded in the ledger only
after ``enqueue_many`` returned), run ``fastq-supervisor`` with fast settings, inject the
fault, let it heal, wait for quiesce, then classify every acknowledged task:

* lost: acknowledged, yet neither completed by a handler nor archived (must be 0);
* duplicated: started more than once, or for a task the row planned to run several times
  (``Ledger.plan``: a planned failure with retries), more often than planned (bounded per row);
* double-completed: successful settlements written to Redis (processed - failed counters)
  beyond the number of distinct tasks completed (must be 0: lease tokens fence them);
* misplaced: anything ``fastq.doctor.check`` reports (must be empty).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from helpers import RedisServer
from ledger import Ledger

import fastq
from fastq import doctor, keys

HERE = Path(__file__).resolve().parent
FAST = ["--lease-duration", "5", "--shutdown-timeout", "3", "--concurrency", "20", "--batch-size", "20",
        "--poll-interval", "0.05"]


@dataclass
class Report:
    enqueued: int
    completed: int
    archived: int
    lost: set = field(default_factory=set)
    duplicated: dict = field(default_factory=dict)
    double_completed: int = 0
    problems: list = field(default_factory=list)

    def assert_ok(self, max_duplicates: int = 0) -> None:
        assert not self.lost, f"lost {len(self.lost)} task(s): {sorted(self.lost)[:10]}"
        assert self.double_completed == 0, f"{self.double_completed} double completion(s)"
        assert not self.problems, f"inconsistent data: {self.problems[:10]}"
        assert len(self.duplicated) <= max_duplicates, f"{len(self.duplicated)} duplicated: {self.duplicated}"


class Harness:
    def __init__(self, tmp_path: Path, queue: str = "default", redis_args: list[str] | None = None) -> None:
        self.tmp = tmp_path
        self.queue = queue
        self.server = RedisServer(tmp_path, extra=["--enable-debug-command", "local", *(redis_args or [])])
        self.server.start()
        self.url = self.server.url
        self.r = redis.Redis.from_url(self.url)
        self.ledger_path = str(tmp_path / "ledger.db")
        self.ledger = Ledger(self.ledger_path)
        self.client = fastq.Client(self.url)
        self.procs: list[subprocess.Popen] = []

    # ------------------------------------------------------------ load

    def enqueue(self, n: int, kind: str = "work", queue: str | None = None, **spec: Any) -> list[str]:
        payload = json.dumps(spec).encode()
        infos = self.client.enqueue_many([fastq.Task(kind, payload)] * n, queue=queue or self.queue,
                                         max_retry=spec.pop("max_retry", 25) if "max_retry" in spec else 25)
        ids = [i.id for i in infos]
        self.ledger.enqueued(ids)
        return ids

    def enqueue_one(self, kind: str = "work", max_retry: int = 25, **spec: Any) -> str:
        info = self.client.enqueue(fastq.Task(kind, json.dumps(spec).encode()), queue=self.queue,
                                   max_retry=max_retry)
        self.ledger.enqueued([info.id])
        return info.id

    # ------------------------------------------------------------ processes

    def supervisor(self, processes: int = 2, *args: str, url: str | None = None, fast: bool = True,
                   env: dict | None = None, target: str = "fault_app:mux") -> subprocess.Popen:
        env = dict(os.environ, FASTQ_LEDGER=self.ledger_path, PYTHONPATH=str(HERE) + os.pathsep +
                   os.environ.get("PYTHONPATH", ""), **(env or {}))
        cmd = [sys.executable, "-m", "fastq.cli.supervisor", target, "--redis-url", url or self.url,
               "--processes", str(processes), "--queues", self.queue, *(FAST if fast else []), *args]
        log = open(self.tmp / f"supervisor-{len(self.procs)}.log", "w")
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()  # the child has its own copy of the descriptor
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def workers(proc: subprocess.Popen) -> list[int]:
        try:
            return sorted(c.pid for c in psutil.Process(proc.pid).children())
        except psutil.NoSuchProcess:
            return []

    def wait_workers(self, proc: subprocess.Popen, n: int, timeout: float = 20) -> list[int]:
        return wait(lambda: len(w := self.workers(proc)) == n and w, timeout, f"{n} workers")

    @staticmethod
    def processes(pids: list[int]) -> list[psutil.Process]:
        """Handles on ``pids`` taken now (each remembers its start time, so a reused PID is not mistaken for it
        later). ``workers()`` is [] once the supervisor is reaped, so a check that the workers are gone after a
        stop must take these while they run and pass them to ``survivors()``."""
        out = []
        for pid in pids:
            try:
                out.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return out

    @staticmethod
    def survivors(procs: list[psutil.Process]) -> list[int]:
        """PIDs of ``procs`` (from ``processes()``) still running: neither gone nor a zombie."""
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise AssertionError("supervisor did not stop in time")

    def log(self, proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text()  # type: ignore[attr-defined]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        self.client.close()
        self.r.close()
        self.server.stop()

    # ------------------------------------------------------------ checking

    def backlog(self) -> int:
        q = self.queue
        try:  # one MULTI: separate reads could miss a task moving between containers
            pipe = self.r.pipeline(transaction=True)
            pipe.llen(keys.pending_key(q)).llen(keys.active_key(q)).zcard(keys.scheduled_key(q)).zcard(keys.retry_key(q))
            return sum(pipe.execute())
        except redis.RedisError:
            return -1

    def quiesce(self, timeout: float = 60) -> None:
        last: list[int] = []

        def drained() -> bool:
            last[:] = [self.backlog()]
            return last[0] == 0

        try:
            wait(drained, timeout, "quiesce (no pending/active/scheduled/retry task)")
        except AssertionError as exc:  # say which: tasks left (how many), or Redis unreachable (-1)
            reading = last[0] if last else None
            raise AssertionError(f"{exc}; last backlog reading: {reading} (-1: Redis error)") from None

    def report(self) -> Report:
        enqueued = self.ledger.enqueued_ids()
        completed = self.ledger.ids("end") & enqueued
        archived = {x.decode("utf-8", "surrogateescape")
                    for x in self.r.zrange(keys.archived_key(self.queue), 0, -1)} & enqueued
        starts = self.ledger.counts("start")
        planned = self.ledger.planned_runs()
        processed = int(self.r.get(keys.processed_total_key(self.queue)) or 0)
        failed = int(self.r.get(keys.failed_total_key(self.queue)) or 0)
        settled_ok = processed - failed
        return Report(
            enqueued=len(enqueued), completed=len(completed), archived=len(archived),
            lost=enqueued - completed - archived,
            duplicated={t: c for t, c in starts.items() if c > planned.get(t, 1) and t in enqueued},
            double_completed=max(0, settled_ok - len(completed - archived)),
            problems=doctor.check(self.r, self.queue),
        )


def faketime_env(offset: str) -> dict | None:
    """Environment that runs a process with its wall clock shifted (libfaketime), or None."""
    import glob

    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1")
    if not libs:
        return None
    return {"LD_PRELOAD": libs[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def wait(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
