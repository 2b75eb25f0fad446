"""Supervised background loops: a loop that raises is logged once with its traceback and restarted
with back-off; one that keeps failing makes its worker stop and exit non-zero (EXIT_LOOP_FAILED),
so the supervisor replaces it instead of keeping a worker that heartbeats but no longer works."""
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import RunningWorker, async_wait_for

import fastq
from fastq import keys
from fastq.server import loops
from fastq.server.processor import Processor
from fastq.server.worker import EXIT_LOOP_FAILED


def test_supervise_restarts_a_failing_loop_and_logs_the_traceback_once(caplog):
    calls = []

    async def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RuntimeError("boom")

    fatal = []
    with caplog.at_level(logging.ERROR, logger="fastq.worker"):
        asyncio.run(loops.supervise("flaky", flaky, lambda n, e: fatal.append(n), backoff_min=0.01))
    assert len(calls) == 3 and not fatal
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "flaky loop failed unexpectedly" in tracebacks[0].getMessage()
    assert any("failed again (2 in a row)" in r.getMessage() for r in caplog.records)


def test_supervise_gives_up_after_max_failures():
    calls = []

    async def broken():
        calls.append(1)
        raise ValueError("always")

    fatal = []
    asyncio.run(loops.supervise("broken", broken, lambda n, e: fatal.append((n, type(e))), max_failures=4,
                                backoff_min=0.001))
    assert len(calls) == 4
    assert fatal == [("broken", ValueError)]


def test_supervise_backs_off_between_restarts():
    calls = []

    async def broken():
        calls.append(time.monotonic())
        raise ValueError("always")

    asyncio.run(loops.supervise("broken", broken, None, max_failures=4, backoff_min=0.05, backoff_max=0.2))
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    # 0.05, 0.1, 0.2 with +-50 % jitter
    assert gaps[0] >= 0.02 and gaps[2] >= 0.09 and sum(gaps) >= 0.17, gaps


def test_supervise_does_not_restart_a_loop_that_returned_or_swallow_cancellation():
    calls = []

    async def once():
        calls.append(1)

    asyncio.run(loops.supervise("once", once))
    assert calls == [1]

    async def main():
        task = asyncio.create_task(loops.supervise("sleepy", lambda: asyncio.sleep(10)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_fetch_loop_failure_is_restarted_and_tasks_keep_running(redis_url, r, monkeypatch):
    real = Processor._next_queues
    failures = []

    def failing_once(self):
        if not failures:
            failures.append(1)
            raise RuntimeError("unexpected bug in queue selection")
        return real(self)

    monkeypatch.setattr(Processor, "_next_queues", failing_once)
    done = []

    async def handler(task):
        done.append(fastq.get_task_id())

    async def main():
        async with RunningWorker(handler, redis_url) as w:
            await async_wait_for(lambda: failures, what="the injected failure")
            with fastq.Client(redis_url) as client:
                ids = [client.enqueue(fastq.Task("t", b"")).id for _ in range(5)]
            await async_wait_for(lambda: set(ids) <= set(done), what="tasks after the restart")
            assert w.worker.exit_code == 0

    asyncio.run(main())


def test_a_loop_that_keeps_failing_stops_the_worker_with_an_exit_code(redis_url, r, monkeypatch):
    async def broken(self):
        raise RuntimeError("deadline scanner bug")

    monkeypatch.setattr(Processor, "deadline_loop", broken)
    monkeypatch.setattr(loops, "BACKOFF_MIN", 0.01)
    seen_status = []

    async def handler(task):
        pass

    async def main():
        w = RunningWorker(handler, redis_url)
        async with w:
            await asyncio.wait_for(w.task, 20)  # stops by itself
            seen_status.append(w.worker.heartbeater.status)
        return w.worker

    worker = asyncio.run(main())
    assert worker.exit_code == EXIT_LOOP_FAILED
    assert seen_status == ["closed"]
    assert not r.zrange(keys.ALL_SERVERS, 0, -1)  # deregistered: it no longer claims to be a healthy server


def test_supervisor_replaces_a_worker_whose_loop_keeps_failing(tmp_path, redis_url, r):
    """End to end: the worker exits with EXIT_LOOP_FAILED, the supervisor logs it and starts a new one."""
    app = tmp_path / "loopapp.py"
    app.write_text(textwrap.dedent("""
        import os
        import fastq
        from fastq.server import loops
        from fastq.server.processor import Processor

        loops.BACKOFF_MIN = 0.01
        mux = fastq.ServeMux()
        original = Processor.deadline_loop

        async def deadline_loop(self):
            if os.path.exists(os.environ["LOOP_FLAG"]):
                raise RuntimeError("deadline scanner bug")
            await original(self)

        Processor.deadline_loop = deadline_loop
    """))
    flag = tmp_path / "fail"
    flag.write_text("1")
    env = {"PYTHONPATH": str(tmp_path), "LOOP_FLAG": str(flag), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "loopapp:mux", "--redis-url", redis_url,
                             "--processes", "1", "--queues", "loops"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        out = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            out.append(line)
            if "exit code 3" in line:
                flag.unlink()
                break
        assert any("exit code 3" in line for line in out), "".join(out)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            out.append(line)
            if "worker" in line and "started: queues" in line:
                break
        assert sum("started: queues" in line for line in out) >= 2, "".join(out)
        assert proc.poll() is None
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "keeps failing" in "".join(out)
