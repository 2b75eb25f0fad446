"""Logging: task fields on records emitted inside handlers (also from threads the handler starts in
a copy of its context), the JSON formatter, the error_handler hook running in the task's context,
and fastq-supervisor's JSON life-cycle lines (started, died with exit code or signal, recycled)."""
from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
import redis
from helpers import RunningWorker, async_wait_for, wait_for

import fastq
import fastq.logging as fql
from fastq.testing import task_context


class Capture(logging.Handler):
    """A handler like the supervisor's (filter + formatter) writing to memory."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.stream = io.StringIO()
        self.setFormatter(formatter)
        self.addFilter(fql.TaskContextFilter())
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.stream.write(self.format(record) + "\n")

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def capture_json():
    handler = Capture(fql.JsonFormatter())
    logger = logging.getLogger("app")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def capture_text():
    handler = Capture(fql.TextFormatter(fql.DEFAULT_FORMAT))  # what fastq-supervisor's text format uses
    logger = logging.getLogger("app")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


def run_tasks(redis_url, handler, tasks, queue="default", **config):
    """Enqueue ``tasks`` and run a real worker until the handler was called for each."""
    done = []

    def wrapped_sync(task):
        try:
            return handler(task)
        finally:
            done.append(task.type)

    async def wrapped_async(task):
        try:
            return await handler(task)
        finally:
            done.append(task.type)

    ids = [fastq.Client(redis_url).enqueue(t, max_retry=0, queue=queue).id for t in tasks]
    config.setdefault("queues", {queue: 1})

    async def main():
        fn = wrapped_async if asyncio.iscoroutinefunction(handler) else wrapped_sync
        async with RunningWorker(fn, redis_url, **config):
            await async_wait_for(lambda: len(done) == len(tasks), what="handlers ran")
            await asyncio.sleep(0.05)

    asyncio.run(main())
    return ids


# ------------------------------------------------------------------ task fields on records


def test_sync_handler_threads_carry_the_task_id_only_with_a_copied_context(redis_url, capture_json):
    log = logging.getLogger("app")

    def handler(task):
        log.info("in the handler")
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(log.info, "from a thread in the task's context"))
        t.start()
        t.join()
        bare = threading.Thread(target=log.info, args=("from a bare thread",))
        bare.start()
        bare.join()

    (tid,) = run_tasks(redis_url, handler, [fastq.Task("sync:job")], queue="critical")
    by_event = {line["event"]: line for line in capture_json.json_lines()}
    for event in ("in the handler", "from a thread in the task's context"):
        line = by_event[event]
        assert line["task_id"] == tid and line["task_type"] == "sync:job"
        assert line["queue"] == "critical" and line["retry"] == 0
    assert "task_id" not in by_event["from a bare thread"]  # a new thread starts with an empty context


def test_async_handler_children_carry_the_task_id(redis_url, capture_text):
    log = logging.getLogger("app")

    async def handler(task):
        log.info("handler")
        await asyncio.to_thread(log.info, "to_thread")                     # copies the context
        await asyncio.get_running_loop().create_task(_log_later(log))       # tasks inherit it

    tids = run_tasks(redis_url, handler, [fastq.Task("a"), fastq.Task("b")], concurrency=2)
    lines = capture_text.lines()
    assert len(lines) == 6
    for tid in tids:
        mine = [line for line in lines if f"task={tid}:" in line]
        assert sorted(line.rsplit(": ", 1)[1] for line in mine) == ["child task", "handler", "to_thread"], lines


async def _log_later(log):
    await asyncio.sleep(0.01)
    log.info("child task")


def test_outside_a_task_the_fields_are_dashes_or_absent(capture_text, capture_json):
    logging.getLogger("app").warning("no task here")
    assert capture_text.lines()[0].endswith("task=-: no task here")
    line = capture_json.json_lines()[0]
    assert line["event"] == "no task here" and line["level"] == "warning" and line["logger"] == "app"
    assert not {"task_id", "task_type", "queue", "retry"} & set(line)


# ------------------------------------------------------------------ the JSON formatter


def test_json_lines_have_structlog_keys_exceptions_and_extras(capture_json):
    log = logging.getLogger("app")
    with task_context("t-1", type="report", queue="low", retry_count=2):
        try:
            raise KeyError("missing")
        except KeyError:
            log.exception("failed %s", "hard", extra={"user": 42, "obj": {1, 2}, "text": "é"})
    (line,) = capture_json.json_lines()
    assert line["event"] == "failed hard" and line["level"] == "error" and line["logger"] == "app"
    assert line["task_id"] == "t-1" and line["task_type"] == "report" and line["queue"] == "low"
    assert line["retry"] == 2 and line["pid"] == os.getpid()
    assert line["exception"].startswith("Traceback") and "KeyError: 'missing'" in line["exception"]
    assert line["user"] == 42 and line["obj"] == "{1, 2}" and line["text"] == "é"
    assert line["timestamp"].endswith("Z") and line["timestamp"][10] == "T"
    assert "\n" not in capture_json.stream.getvalue().rstrip("\n")  # one line per record


def test_extra_task_fields_win_over_the_context(capture_json):
    with task_context("ctx-id"):
        logging.getLogger("app").info("x", extra={"task_id": "given"})
    assert capture_json.json_lines()[0]["task_id"] == "given"


def test_structlog_processor_adds_task_fields():
    assert fql.add_task_context(None, "info", {"event": "e"}) == {"event": "e"}
    with task_context("t-9", type="t", queue="q", retry_count=1):
        out = fql.add_task_context(None, "info", {"event": "e", "queue": "mine"})
    assert out == {"event": "e", "task_id": "t-9", "task_type": "t", "queue": "mine", "retry": 1}


def test_setup_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="log_format must be one of text, json"):
        fql.setup(log_format="xml")


# ------------------------------------------------------------------ no forged lines (control characters)

FORGED = "x\nFAKE LINE ERROR admin"


def test_text_lines_escape_control_characters_in_the_message_and_task_fields(capture_text):
    log = logging.getLogger("app")
    with task_context("id\r\n2026-01-01 00:00:00,000 ERROR", type="a\nb", queue="q\x1b[2J"):
        log.warning("failed: %s", FORGED + "\t\x85\u2028\x7f", extra={"task_type": "a\nb"})
    (line,) = capture_text.lines()  # splitlines() also breaks at \x85 and \u2028
    assert line.endswith("task=id\\r\\n2026-01-01 00:00:00,000 ERROR: failed: x\\nFAKE LINE ERROR admin"
                         "\\t\\x85\\u2028\\x7f")
    # the other fields of a format are escaped too
    fmt = fql.TextFormatter("%(task_type)s %(queue)s %(message)s")
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "m", (), None)
    record.__dict__.update(task_type="a\nb", queue="q\x1b[2J")
    assert fmt.format(record) == "a\\nb q\\x1b[2J m"


def test_text_lines_without_control_characters_are_unchanged():
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "caf\u00e9 %s \\n C:\\tmp", ("\u00a0x",), None)
    record.task_id = "t-1"
    assert fql.TextFormatter(fql.DEFAULT_FORMAT).format(record) == logging.Formatter(fql.DEFAULT_FORMAT).format(record)


def test_text_traceback_keeps_the_exception_text_on_its_line(capture_text):
    try:
        try:
            raise ValueError("inner\nFAKE LINE INFO inner")
        except ValueError as exc:
            raise RuntimeError(FORGED) from exc
    except RuntimeError:
        logging.getLogger("app").exception("boom")
    lines = capture_text.lines()
    assert lines[0].endswith("task=-: boom") and lines[1] == "Traceback (most recent call last):"
    assert "ValueError: inner\\nFAKE LINE INFO inner" in lines
    assert lines[-1] == "RuntimeError: x\\nFAKE LINE ERROR admin"
    assert not [line for line in lines if line.startswith("FAKE")]


def test_json_lines_escape_every_line_break(capture_json):
    text = FORGED + "\r\x85\u2028\u2029\x1b\x7f\x9b"
    with task_context("t-1", type="a\nb", queue="q\u2028"):
        logging.getLogger("app").warning(text, extra={"note": "n\x85"})
    (line,) = capture_json.lines()  # str.splitlines() breaks at \x85, \u2028 and \u2029 too
    assert line.isprintable()
    record = json.loads(line)
    assert record["event"] == text and record["task_type"] == "a\nb" and record["queue"] == "q\u2028"
    assert record["note"] == "n\x85"


@pytest.mark.slow
def test_supervisor_text_log_has_one_line_for_a_forged_failure(tmp_path, redis_url):
    """A handler's error text and a task type with newlines cannot add lines to fastq-supervisor's text log."""
    (tmp_path / "forge_app.py").write_text(textwrap.dedent('''
        import fastq
        mux = fastq.ServeMux()

        @mux.handle("a\\nb")
        async def forge(task):
            raise RuntimeError("x\\nFAKE LINE ERROR admin")
    '''))
    # fastq's client refuses such a type; Go Asynq's does not: write the task as it does
    from fastq._codec import TaskMessage, encode_message

    tid = "forged-1"
    r = redis.Redis.from_url(redis_url)
    r.sadd("asynq:queues", "default")
    msg = encode_message(TaskMessage(type="a\nb", id=tid, queue="default", retry=0, timeout=1800))
    r.hset(f"asynq:{{default}}:t:{tid}", mapping={"state": "pending", "pending_since": time.time_ns(), "msg": msg})
    r.lpush("asynq:{default}:pending", tid)
    r.close()
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "forge_app:mux", "--redis-url", redis_url,
                             "--processes", "1", "--shutdown-timeout", "1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ins = fastq.Inspector(redis_url)
        wait_for(lambda: ins.get_queue_info("default").archived == 1, timeout=20, what="the task archived")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = err.splitlines()
    record = [line for line in lines if "FAKE LINE" in line]
    assert len(record) == 1, err
    assert (f"task={tid}: task {tid} (a\\nb) failed and is archived: RuntimeError: x\\nFAKE LINE ERROR admin"
            in record[0])
    assert not [line for line in lines if line.startswith("FAKE") or line == "b"]


# ------------------------------------------------------------------ error reports


def test_error_handler_runs_in_the_task_context(redis_url, capture_json):
    """The docs' Sentry-style hook (docs/ops/logging.md): tags from fastq.current_task(), called once per failure."""
    reports = []
    log = logging.getLogger("app")

    def report_error(task, exc):  # the docs' example, with a list instead of sentry_sdk
        ctx = fastq.current_task()
        reports.append({"tags": {"fastq.task_id": fastq.get_task_id(), "fastq.task_type": task.type,
                                 "fastq.queue": ctx.queue, "fastq.retry": ctx.retry_count},
                        "exception": exc, "thread": threading.current_thread().name})
        log.error("reported")

    def handler(task):
        if task.type == "ok":
            return None
        if task.type == "skip":
            raise fastq.SkipRetry("bad input")
        raise ValueError("boom")

    ids = run_tasks(redis_url, handler, [fastq.Task("ok"), fastq.Task("boom"), fastq.Task("skip")],
                    error_handler=report_error)
    assert sorted(r["tags"]["fastq.task_id"] for r in reports) == sorted(ids[1:])
    by_type = {r["tags"]["fastq.task_type"]: r for r in reports}
    assert set(by_type) == {"boom", "skip"}  # not called for the task that succeeded
    assert isinstance(by_type["boom"]["exception"], ValueError) and by_type["boom"]["tags"]["fastq.retry"] == 0
    assert isinstance(by_type["skip"]["exception"], fastq.SkipRetry)
    assert {line["task_id"] for line in capture_json.json_lines() if line["event"] == "reported"} == set(ids[1:])
    with pytest.raises(fastq.NoTaskContextError):
        fastq.get_task_id()  # the context does not leak out of the hook


def test_a_failing_error_handler_does_not_stop_the_worker(redis_url):
    def bad_hook(task, exc):
        raise RuntimeError("the reporter is down")

    ids = run_tasks(redis_url, lambda task: 1 / 0, [fastq.Task("a"), fastq.Task("b")], error_handler=bad_hook)
    ins = fastq.Inspector(redis_url)
    assert {ins.get_task_info("default", i).state.value for i in ids} == {"archived"}


# ------------------------------------------------------------------ fastq-supervisor --log-format json

APP = textwrap.dedent('''
    import asyncio, logging, os, fastq
    log = logging.getLogger("app")
    mux = fastq.ServeMux()

    @mux.handle("hello")
    async def hello(task):
        log.info("hello from the handler")

    @mux.handle("sleep")
    async def sleep(task):
        await asyncio.sleep(60)

    @mux.handle("exit")
    def exit_(task):
        os._exit(3)
''')


def run_supervisor(tmp_path, redis_url, *args):
    (tmp_path / "log_app.py").write_text(APP)
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", "log_app:mux", "--redis-url", redis_url,
           "--log-format", "json", "--shutdown-timeout", "1", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_supervisor_json_logs_and_life_cycle_events(tmp_path, redis_url):
    c = fastq.Client(redis_url)
    hello = c.enqueue(fastq.Task("hello")).id
    proc = run_supervisor(tmp_path, redis_url, "--processes", "1", "--max-tasks-per-child", "2")
    try:
        worker_pids = lambda: [p.pid for p in psutil.Process(proc.pid).children()]  # noqa: E731
        first = wait_for(lambda: worker_pids(), what="a worker")[0]
        c.enqueue(fastq.Task("hello"))  # the second task: the worker recycles itself (max 2)
        second = wait_for(lambda: (w := worker_pids()) and w[0] != first and w[0], what="recycled")
        c.enqueue(fastq.Task("exit"), max_retry=0)  # the handler ends the process with exit code 3
        third = wait_for(lambda: (w := worker_pids()) and w[0] != second and w[0], timeout=15, what="restarted")
        c.enqueue(fastq.Task("sleep"))
        wait_for(lambda: fastq.Inspector(redis_url).get_queue_info("default").active == 1, what="sleeping task")
        os.kill(third, signal.SIGKILL)
        wait_for(lambda: (w := worker_pids()) and w[0] != third, timeout=15, what="replaced after SIGKILL")
        # the replacement runs the recovered task, then stops cleanly (requeueing it) on SIGTERM
        wait_for(lambda: fastq.Inspector(redis_url).get_queue_info("default").active == 1, timeout=15,
                 what="recovered task running again")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    handler_line = next(line for line in lines if line["event"] == "hello from the handler")
    assert handler_line["task_id"] == hello and handler_line["task_type"] == "hello" and handler_line["retry"] == 0
    events = [line for line in lines if "lifecycle" in line]
    kinds = [e["lifecycle"] for e in events]
    assert kinds.count("child_started") >= 4
    recycled = next(e for e in events if e["lifecycle"] == "child_recycled")
    assert recycled["child_pid"] == first and recycled["exit_code"] == 0 and recycled["reason"] == "self"
    died = [e for e in events if e["lifecycle"] == "child_died"]
    assert {"child_pid": second, "exit_code": 3} in [{k: e.get(k) for k in ("child_pid", "exit_code")} for e in died]
    killed = next(e for e in died if e["child_pid"] == third)
    assert killed["signal"] == "SIGKILL" and killed["kind"] == "worker" and killed["slot"] == 0
    assert "exit_code" not in killed and killed["pid"] == proc.pid
    stopped = [e for e in events if e["lifecycle"] == "child_stopped"]
    assert stopped and stopped[-1]["exit_code"] == 0


def _readme_block(marker: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "ops" / "logging.md").read_text()
    blocks = text.split("```python\n")[1:]
    (block,) = [b.split("```", 1)[0] for b in blocks if marker in b]
    return block


def test_readme_reporting_middleware_reports_in_the_task_context(redis_url):
    """The docs' middleware for fastq-supervisor (which has no error_handler flag), run as written."""
    reports = []

    def report(task, exc):
        reports.append((fastq.get_task_id(), task.type, type(exc).__name__))

    mux = fastq.ServeMux()
    namespace = {"fastq": fastq, "mux": mux, "report": report}
    exec(compile(_readme_block("def reporting(handler):"), "docs/ops/logging.md", "exec"), namespace)

    @mux.handle("async:boom")
    async def aboom(task):
        raise ValueError("a")

    @mux.handle("sync:boom")
    def sboom(task):
        raise KeyError("s")

    @mux.handle("revoked")
    def revoked(task):
        raise fastq.RevokeTask()

    @mux.handle("fine")
    async def fine(task):
        return None

    assert asyncio.iscoroutinefunction(mux.resolve("async:boom")[0])
    assert not asyncio.iscoroutinefunction(mux.resolve("sync:boom")[0])
    client = fastq.Client(redis_url)
    ids = [client.enqueue(fastq.Task(t), max_retry=0).id for t in ("async:boom", "sync:boom", "revoked", "fine")]

    async def main():
        async with RunningWorker(mux, redis_url):
            await async_wait_for(lambda: fastq.Inspector(redis_url).get_queue_info("default").processed == 4,
                                 what="4 tasks processed")

    asyncio.run(main())
    assert sorted(reports) == sorted([(ids[0], "async:boom", "ValueError"), (ids[1], "sync:boom", "KeyError")])


# ------------------------------------------------------------------ --log-tasks


@pytest.fixture
def capture_tasks():
    handler = Capture(fql.JsonFormatter())
    logger = logging.getLogger("fastq.tasks")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def test_log_tasks_writes_one_line_per_finished_task_with_outcome_and_duration(redis_url, capture_tasks):
    async def handler(task):
        if task.type == "bad":
            raise fastq.SkipRetry("nope")
        await asyncio.sleep(0.02)

    ids = run_tasks(redis_url, handler, [fastq.Task("good"), fastq.Task("bad")], log_tasks=True)
    records = {r["task_id"]: r for r in capture_tasks.json_lines()}
    assert set(records) == set(ids)
    good, bad = records[ids[0]], records[ids[1]]
    assert good["outcome"] == "done" and good["task_type"] == "good" and good["duration_ms"] >= 20
    assert f"task {ids[0]} (good) done in " in good["event"]
    assert bad["outcome"] == "archive" and "SkipRetry: nope" in bad["event"]


def test_tasks_are_not_logged_by_default(redis_url, capture_tasks):
    async def handler(task):
        return None

    run_tasks(redis_url, handler, [fastq.Task("quiet")])
    assert capture_tasks.lines() == []


def test_log_tasks_adds_its_hook_once():
    from fastq.server.config import WorkerConfig

    config = WorkerConfig(redis_url="redis://", log_tasks=True)
    again = __import__("dataclasses").replace(config, concurrency=5)
    assert [type(h).__name__ for h in again.hooks] == ["TaskLog"]
