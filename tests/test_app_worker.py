"""fastq.App, worker side: real fastq workers in-process (WorkerHarness, fastq.Worker) on the test
session's Redis run App tasks: results, bad payloads archived with the reason, retry_on,
Backoff delays as retry scores, fastq.Retry(in_=...), unknown task types, Go-shaped payloads."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

import fastq
from fastq import keys
from fastq._codec import decode_message
from fastq.testing import WorkerHarness


@dataclass
class Item:
    sku: str
    qty: int


def message(r, queue: str, task_id: str) -> Any:
    return decode_message(r.hget(keys.task_key(queue, task_id), "msg"))


@pytest.fixture
def app(redis_url):
    application = fastq.App(redis_url)
    yield application
    application.close()


def test_tasks_run_and_keep_their_json_result(app, r, redis_url):
    @app.task(name="order:total", queue="orders")
    async def total(items: list[Item], placed: datetime) -> dict[str, Any]:
        return {"total": sum(i.qty for i in items), "day": placed.date().isoformat()}

    @app.task(name="order:pdf", queue="orders")
    def pdf(order_id: int) -> bytes:
        return b"%PDF-" + str(order_id).encode()

    @app.task(name="order:log")
    def log(order_id: int) -> None:
        pass

    placed = datetime(2024, 5, 1, 9, tzinfo=timezone.utc)
    a = total.enqueue([Item("x", 2), Item("y", 3)], placed)
    b = pdf.enqueue(7)
    c = log.enqueue(7)
    result = WorkerHarness(app, redis_url).drain(timeout=10)
    assert sorted(result.succeeded) == sorted([a.id, b.id, c.id]) and result.handler_calls == 3
    ins = fastq.Inspector(redis_url)
    try:
        info = ins.get_task_info("orders", a.id)
        assert info.state == fastq.TaskState.COMPLETED and info.retention == 3600
        assert info.result == b'{"day":"2024-05-01","total":5}'  # a dict is a Go map: keys sorted
        assert total.signature.load_result(info.result) == {"total": 5, "day": "2024-05-01"}
        assert ins.get_task_info("orders", b.id).result == b"%PDF-7"  # bytes stay raw
    finally:
        ins.close()
    assert not r.exists(keys.task_key("default", c.id))  # -> None: retention 0, deleted as Asynq does


def test_a_payload_that_does_not_fit_is_archived_at_once_with_the_reason(app, r, redis_url):
    calls = []

    @app.task(name="email:send", max_retry=25)
    def send(to: str, subject: str = "") -> None:
        calls.append(to)

    with fastq.Client(redis_url) as client:
        bad_type = client.enqueue(fastq.Task("email:send", b'{"to": 5}'))
        unknown = client.enqueue(fastq.Task("email:send", b'{"to": "a", "cc": "b"}'))
        not_json = client.enqueue(fastq.Task("email:send", b"a@b.c"))
        missing = client.enqueue(fastq.Task("email:send", b"{}"))
    result = WorkerHarness(app, redis_url).drain(timeout=10)
    assert calls == [] and result.awaiting_retry == []
    assert sorted(result.archived) == sorted([bad_type.id, unknown.id, not_json.id, missing.id])
    errors = result.stored_errors
    assert errors[bad_type.id] == ("email:send payload: field 'to': expected a string, got a number: "
                                   "skip retry for the task")
    assert errors[unknown.id].startswith("email:send payload: field 'cc': unknown parameter "
                                         "(the task has: to, subject)")
    assert errors[not_json.id].startswith("email:send payload: not valid JSON")
    assert errors[missing.id].startswith("email:send payload: field 'to': missing")
    assert message(r, "default", bad_type.id).retried == 0  # never retried


def test_retry_on_retries_those_and_archives_the_rest(redis_url, r):
    app = fastq.App(redis_url)

    @app.task(name="fetch", retry_on=(IOError, TimeoutError), retry_backoff=fastq.Backoff(base=600, jitter=0))
    def fetch(kind: str) -> None:
        if kind == "io":
            raise OSError("connection reset")
        if kind == "value":
            raise ValueError("bad url")
        if kind == "skip":
            raise fastq.SkipRetry("gone")
        raise fastq.Retry(in_=1200)  # retried even though Retry is not in retry_on

    refs = {kind: fetch.enqueue(kind) for kind in ("io", "value", "skip", "retry")}
    result = WorkerHarness(app, redis_url).drain(timeout=10)
    assert sorted(result.awaiting_retry) == sorted([refs["io"].id, refs["retry"].id])
    assert sorted(result.archived) == sorted([refs["value"].id, refs["skip"].id])
    assert result.stored_errors[refs["value"].id] == (
        "ValueError: bad url (not retried: retry_on of 'fetch' is OSError, TimeoutError): skip retry for the task")
    assert result.stored_errors[refs["io"].id] == "OSError: connection reset"
    assert result.stored_errors[refs["retry"].id] == "Retry: retry in 1200s"
    assert isinstance(result.exceptions[refs["value"].id].__cause__, ValueError)
    assert message(r, "default", refs["retry"].id).retried == 1  # a counted retry
    now = time.time()
    assert r.zscore(keys.retry_key("default"), refs["io"].id) == pytest.approx(now + 600, abs=3)
    assert r.zscore(keys.retry_key("default"), refs["retry"].id) == pytest.approx(now + 1200, abs=3)
    runs = {run.id: run for run in result.runs}
    assert runs[refs["io"].id].retry_delay == 600 and runs[refs["retry"].id].retry_delay == 1200
    app.close()


def test_backoff_delays_as_retry_scores_and_run_retries(redis_url, r):
    app = fastq.App(redis_url)
    attempts = []

    @app.task(name="flaky", max_retry=3, retry_backoff=fastq.Backoff(base=100, factor=2, max=300, jitter=0))
    async def flaky() -> str:
        attempts.append(fastq.get_retry_count())
        raise OSError("down")

    ref = flaky.enqueue()
    result = WorkerHarness(app, redis_url).drain(timeout=10)  # one run, then the retry is not due
    assert result.awaiting_retry == [ref.id] and attempts == [0]
    assert r.zscore(keys.retry_key("default"), ref.id) == pytest.approx(time.time() + 100, abs=3)
    r.zadd(keys.retry_key("default"), {ref.id: 0})  # make it due: the second failure waits 2 x 100 s
    result = WorkerHarness(app, redis_url).drain(timeout=10)
    assert attempts == [0, 1] and result.runs[0].retry_delay == 200
    assert r.zscore(keys.retry_key("default"), ref.id) == pytest.approx(time.time() + 200, abs=3)

    again = flaky.enqueue()
    attempts.clear()
    result = WorkerHarness(app, redis_url, run_retries=True).drain(timeout=10)  # no waiting at all
    assert attempts == [0, 1, 2, 3] and result.archived == [again.id] and result.awaiting_retry == []
    assert [run.retry_delay for run in result.runs if run.id == again.id] == [100, 200, 300, None]
    app.close()


def test_unknown_task_types(redis_url):
    archiving = fastq.App(redis_url, unknown="archive")
    retrying = fastq.App(redis_url)
    with fastq.Client(redis_url) as client:
        a = client.enqueue(fastq.Task("nobody:home"), queue="a")
        b = client.enqueue(fastq.Task("nobody:home"), queue="b")
    result = WorkerHarness(archiving, redis_url, queues=["a"]).drain(timeout=10)
    assert result.archived == [a.id]
    assert result.stored_errors[a.id] == ("handler not found for task 'nobody:home' (unknown task types are "
                                          "archived: App(unknown='archive')): skip retry for the task")
    result = WorkerHarness(retrying, redis_url, queues=["b"]).drain(timeout=10)
    assert result.awaiting_retry == [b.id]
    assert result.stored_errors[b.id] == "HandlerNotFoundError: handler not found for task 'nobody:home'"


def test_a_go_producers_json_runs_the_task(app, redis_url):
    seen = []

    @app.task(name="email:send")
    def send(to: str, subject: str, at: datetime, attachment: bytes = b"", tags: list[str] | None = None) -> None:
        seen.append((to, subject, at, attachment, tags))

    # What Go writes: json.Marshal of a struct with json tags, time.Time as RFC 3339, []byte as base64.
    go_json = (b'{"to":"a@b.c","subject":"hi","at":"2024-05-01T10:00:00Z","attachment":"aGVsbG8=",'
               b'"tags":["x","y"]}')
    with fastq.Client(redis_url) as client:
        ref = client.enqueue(fastq.Task("email:send", go_json), max_retry=0)
    result = WorkerHarness(app, redis_url).drain(timeout=10)
    assert result.succeeded == [ref.id]
    assert seen == [("a@b.c", "hi", datetime(2024, 5, 1, 10, tzinfo=timezone.utc), b"hello", ["x", "y"])]


def test_fastq_worker_takes_the_app_with_its_settings(redis_url, r):
    ran = []

    def tag(handler: Any) -> Any:
        async def wrapped(task: fastq.Task) -> Any:
            ran.append(task.type)
            return await handler(task)
        return wrapped

    app = fastq.App(redis_url, middleware=[tag], forward_interval=0.05, poll_interval=0.01)

    @app.task(name="later", queue="slow")
    async def later() -> None:
        raise fastq.Retry(in_=5000)

    ref = later.enqueue()

    async def main() -> None:
        worker = fastq.Worker(app)  # the App's mux and app.worker_config()
        assert worker.config.queues == {"default": 1, "slow": 1} and worker.config.retry_delay == app.retry_delay
        running = asyncio.create_task(worker.run())
        for _ in range(500):
            if r.zscore(keys.retry_key("slow"), ref.id) is not None:
                break
            await asyncio.sleep(0.01)
        worker.stop()
        await running

    asyncio.run(main())
    assert ran == ["later"]
    assert r.zscore(keys.retry_key("slow"), ref.id) == pytest.approx(time.time() + 5000, abs=3)
    app.close()


def test_harness_with_an_app_takes_overrides(redis_url):
    app = fastq.App(redis_url, queues={"x": 1})
    harness = WorkerHarness(app, redis_url, concurrency=3)
    assert harness.config["queues"] == {"x": 1} and harness.config["concurrency"] == 3
    assert harness.config["retry_delay"] == app.retry_delay
    with pytest.raises(TypeError, match="run_retries must be a bool"):
        WorkerHarness(app, redis_url, run_retries="yes")


def test_a_given_worker_config_gets_the_apps_retry_delay_unless_it_has_its_own(redis_url, tmp_path, monkeypatch):
    from fastq.server.supervisor import import_app

    app = fastq.App(redis_url)
    mux, cfg = app.worker_parts(fastq.WorkerConfig(redis_url=redis_url, queues={"q": 2}))
    assert mux is app.mux and cfg.retry_delay == app.retry_delay and cfg.queues == {"q": 2}

    def own(*args: Any) -> float:
        return 1.0

    assert app.worker_parts(fastq.WorkerConfig(redis_url=redis_url, retry_delay=own))[1].retry_delay is own
    # fastq-supervisor resolves APP to the App itself: a handler, whose worker_parts the Worker uses
    (tmp_path / "app_module_for_supervisor.py").write_text(
        "import fastq\napp = fastq.App()\n\n@app.task(name='t')\ndef t(n: int) -> int:\n    return n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = import_app("app_module_for_supervisor:app")
    assert isinstance(loaded, fastq.App) and loaded(fastq.Task("t", b'{"n": 2}')) == b"2"


def test_run_retries_records_the_delays_of_a_sync_tasks_timeout_errors(app, redis_url):
    # asyncio hands a sync handler's TimeoutError to the worker as a copy: the delay is still recorded
    @app.task(name="slow", max_retry=2, retry_backoff=fastq.Backoff(base=60, jitter=0))
    def slow() -> None:
        raise TimeoutError("still down")

    ref = slow.enqueue()
    result = WorkerHarness(app, redis_url, run_retries=True).drain(timeout=10)
    assert result.archived == [ref.id]
    assert [run.retry_delay for run in result.runs] == [60, 120, None]
