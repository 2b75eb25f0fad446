"""fastq-supervisor as users run it: real processes, real signals, real Redis."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from helpers import wait_for

import fastq
from fastq import keys
from fastq._proto import ServerInfo, decode

pytestmark = pytest.mark.slow

APP = textwrap.dedent('''
    import asyncio, logging, os, fastq
    log = logging.getLogger("app")
    mux = fastq.ServeMux()

    @mux.handle("noop")
    async def noop(task):
        pass

    @mux.handle("slow")
    async def slow(task):
        log.info("slow task %s started in %d", fastq.get_task_id(), os.getpid())
        await asyncio.sleep(float(task.payload or b"60"))

    def plain(task):
        log.info("plain handler ran %s", fastq.get_task_id())

    not_a_handler = 42
''')


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "sup_app.py").write_text(APP)
    (tmp_path / "broken_app.py").write_text("import does_not_exist_anywhere\n")
    return tmp_path


def start(app_dir, redis_url, *args, app="sup_app:mux"):
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", app, "--redis-url", redis_url, *args]
    return subprocess.Popen(cmd, cwd=app_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def workers(proc) -> list[int]:
    try:
        return sorted(c.pid for c in psutil.Process(proc.pid).children())
    except psutil.NoSuchProcess:
        return []


def servers(r) -> list[ServerInfo]:
    return [decode(ServerInfo, r.get(k)) for k in r.zrange(keys.ALL_SERVERS, 0, -1) if r.get(k)]


def stop(proc, sig=signal.SIGTERM, timeout=30) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"supervisor did not stop:\n{err}")
    return proc.returncode, err


def test_processes_tasks_with_several_workers_registered_as_asynq_servers(app_dir, redis_url, r):
    fastq.Client(redis_url).enqueue_many([fastq.Task("noop")] * 5000, queue="critical")
    proc = start(app_dir, redis_url, "--processes", "2", "--concurrency", "7",
                 "--queues", "critical=6,default=3,low=1", "--strict-priority")
    try:
        wait_for(lambda: r.get(keys.processed_total_key("critical")) == b"5000", timeout=30, what="drain")
        infos = wait_for(lambda: len(servers(r)) == 2 and servers(r), what="2 servers")
        assert sorted(i.pid for i in infos) == workers(proc)
        for info in infos:
            assert info.concurrency == 7 and info.strict_priority and info.status == "active"
            assert info.queues == {"critical": 6, "default": 3, "low": 1}
        assert r.smembers(keys.ALL_QUEUES) >= {b"critical", b"default", b"low"}
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert not r.zcard(keys.ALL_SERVERS) and not r.keys("asynq:servers:*")


def test_a_killed_worker_is_replaced_and_only_that_one(app_dir, redis_url, r):
    proc = start(app_dir, redis_url, "--processes", "2")
    try:
        before = wait_for(lambda: len(workers(proc)) == 2 and workers(proc), what="2 workers")
        os.kill(before[0], signal.SIGKILL)
        after = wait_for(lambda: (w := workers(proc)) and len(w) == 2 and before[0] not in w and w,
                         timeout=15, what="replacement")
        assert before[1] in after  # the healthy worker was left alone
        fastq.Client(redis_url).enqueue_many([fastq.Task("noop")] * 100)
        wait_for(lambda: r.get(keys.processed_total_key("default")) == b"100", what="tasks after restart")
    finally:
        code, err = stop(proc)
    assert code == 0
    assert "killed by SIGKILL" in err and "restarting" in err


def test_sigterm_is_graceful_and_requeues_what_does_not_finish(app_dir, redis_url, r):
    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("slow", b"0.5"), task_id="short")
    client.enqueue(fastq.Task("slow", b"60"), task_id="long")
    proc = start(app_dir, redis_url, "--processes", "1", "--shutdown-timeout", "2")
    try:
        wait_for(lambda: r.llen(keys.active_key("default")) == 2, what="both running")
        t0 = time.monotonic()
        code, err = stop(proc)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert 1.5 < elapsed < 10
    assert r.get(keys.processed_total_key("default")) == b"1"  # the short one finished
    assert r.lrange(keys.pending_key("default"), 0, -1) == [b"long"]  # the long one went back
    assert not r.llen(keys.active_key("default")) and not r.zcard(keys.lease_key("default"))
    assert "slow task long started" in err and "task=long" in err  # the task ID is on the log line


def test_second_signal_stops_at_once(app_dir, redis_url, r):
    fastq.Client(redis_url).enqueue(fastq.Task("slow", b"60"), task_id="long")
    proc = start(app_dir, redis_url, "--processes", "1", "--shutdown-timeout", "60")
    try:
        wait_for(lambda: r.llen(keys.active_key("default")) == 1, what="running")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        t0 = time.monotonic()
        code, err = stop(proc, signal.SIGINT)
        assert time.monotonic() - t0 < 8
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert r.lrange(keys.pending_key("default"), 0, -1) == [b"long"]


def test_plain_function_app(app_dir, redis_url, r):
    fastq.Client(redis_url).enqueue(fastq.Task("anything"), task_id="p1")
    proc = start(app_dir, redis_url, "--processes", "1", app="sup_app:plain")
    try:
        wait_for(lambda: r.get(keys.processed_total_key("default")) == b"1", what="plain handler")
    finally:
        code, err = stop(proc)
    assert "plain handler ran p1" in err


@pytest.mark.parametrize("args, app, message", [
    (["--queues", "a=x"], "sup_app:mux", "weight of 'a' must be an integer"),
    (["--queues", "a,,b"], "sup_app:mux", "empty entry"),
    (["--queues", "a=0"], "sup_app:mux", "at least 1"),
    (["--processes", "0"], "sup_app:mux", "Invalid value for '--processes': must be at least 1, got 0"),
    (["--concurrency", "many"], "sup_app:mux", "expected an integer"),
    (["--shutdown-timeout", "-1"], "sup_app:mux", "finite number >= 0"),
    ([], "sup_app", "must look like 'module:attribute'"),
    ([], "broken_app:mux", "cannot import module 'broken_app'"),
    ([], "no_such_module:mux", "cannot import module 'no_such_module'"),
    ([], "sup_app:missing", "has no attribute 'missing'"),
    ([], "sup_app:not_a_handler", "not a ServeMux or a handler"),
])
def test_bad_command_lines_fail_clearly(app_dir, redis_url, args, app, message):
    proc = start(app_dir, redis_url, *args, app=app)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert message in err
    assert "Traceback" not in err


def test_bad_redis_url_fails_clearly(app_dir):
    proc = start(app_dir, "http://nowhere:1/0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "invalid Redis URL" in err and "Traceback" not in err


SCHED_APP = textwrap.dedent('''
    import fastq
    sched = fastq.Scheduler()
    sched.register("@every 1s", fastq.Task("noop"), queue="default")
''')


def test_supervisor_runs_the_scheduler_in_an_extra_process(app_dir, redis_url, r):
    (app_dir / "sched_app.py").write_text(SCHED_APP)
    proc = start(app_dir, redis_url, "--processes", "1", "--scheduler", "sched_app:sched")
    try:
        wait_for(lambda: int(r.get(keys.processed_total_key("default")) or 0) >= 2, timeout=20,
                 what="periodic tasks enqueued and processed")
        assert len(workers(proc)) == 2  # one worker + the scheduler
        assert r.zcard(keys.ALL_SCHEDULERS) == 1
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "started scheduler" in err
    assert not r.zcard(keys.ALL_SCHEDULERS)


def test_bad_scheduler_app_fails_clearly(app_dir, redis_url):
    proc = start(app_dir, redis_url, "--scheduler", "sup_app:mux")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "not a fastq.Scheduler" in err and "Traceback" not in err


def test_memory_limit_below_a_fresh_worker_backs_off_and_says_why_once(app_dir, redis_url):
    """--max-memory-per-child below what a fresh worker uses used to fork in a loop (11 forks in 8 s)."""
    proc = start(app_dir, redis_url, "--processes", "1", "--max-memory-per-child", "1")
    time.sleep(8)
    code, err = stop(proc)
    assert code == 0, err
    forks = err.count("started worker")
    assert 2 <= forks <= 5, err  # back-off 1, 2, 4 s... after each early recycle
    assert err.count("is below what a fresh worker uses") == 1, err
    assert "raise the limit" in err
