"""fastq.testing and the pytest plugin: run_handler / task_context without Redis, drain with a real worker."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis

import fastq
from fastq import keys
from fastq.errors import TaskCanceledError
from fastq.testing import DrainTimeoutError, WorkerHarness, arun_handler, run_handler, task_context

PAYLOAD = b'{"user_id":42}'


def _snapshot():
    """Everything the context getters report (the handler-side API)."""
    ctx = fastq.current_task()
    return {
        "id": fastq.get_task_id(), "retry": fastq.get_retry_count(), "max": fastq.get_max_retry(),
        "queue": fastq.get_queue_name(), "type": ctx.type, "headers": dict(ctx.headers),
        "deadline": ctx.deadline, "parent": fastq.get_parent_task_id(), "root": fastq.get_root_task_id(),
    }


def assert_outside_a_handler():
    assert fastq.current_task() is None
    for getter in (fastq.get_task_id, fastq.get_retry_count, fastq.get_max_retry, fastq.get_queue_name,
                   fastq.get_parent_task_id, fastq.get_root_task_id):
        with pytest.raises(fastq.NoTaskContextError, match=rf"fastq\.{getter.__name__}\(\) called outside"):
            getter()


# ------------------------------------------------------------------ outside a handler

def test_outside_a_handler_getters_raise_and_current_task_is_none():
    assert_outside_a_handler()
    assert issubclass(fastq.NoTaskContextError, LookupError)


# ------------------------------------------------------------------ run_handler

def test_run_handler_sync_gives_the_full_context_and_returns_the_result():
    seen = {}

    def handler(task):
        seen.update(_snapshot(), payload=task.payload, task_headers=dict(task.headers))
        return "done"

    before = time.time()
    result = run_handler(handler, fastq.Task("email:deliver", PAYLOAD, {"trace": "t1"}), task_id="tid-1",
                         retry_count=2, max_retry=5, queue="critical", headers={"fastq-parent-id": "p-1"})
    assert result == "done"
    assert seen["id"] == "tid-1" and seen["retry"] == 2 and seen["max"] == 5 and seen["queue"] == "critical"
    assert seen["type"] == "email:deliver" and seen["payload"] == PAYLOAD
    assert seen["headers"] == seen["task_headers"] == {"trace": "t1", "fastq-parent-id": "p-1"}
    assert seen["parent"] == "p-1" and seen["root"] is None
    assert before + 1800 <= seen["deadline"] <= time.time() + 1800  # the worker's default timeout
    assert_outside_a_handler()


def test_run_handler_async_runs_on_a_fresh_loop_with_a_random_uuid():
    seen = {}

    async def handler(task):
        await asyncio.sleep(0)
        seen.update(_snapshot(), loop=id(asyncio.get_running_loop()))
        return task.payload[::-1]

    assert run_handler(handler, fastq.Task("t", b"abc")) == b"cba"
    first = seen["id"]
    assert str(uuid.UUID(first)) == first and seen["retry"] == 0 and seen["max"] == 25 and seen["queue"] == "default"
    run_handler(handler, fastq.Task("t", b"abc"))
    assert seen["id"] != first
    assert_outside_a_handler()


def test_run_handler_routes_through_a_servemux_with_middleware():
    mux = fastq.ServeMux()
    calls = []

    def middleware(next_handler):
        def wrapped(task):
            calls.append(("mw", fastq.get_task_id()))
            return next_handler(task)
        return wrapped

    mux.use(middleware)

    @mux.handle("report:")
    def build(task):
        calls.append(("report", task.type, fastq.get_queue_name()))
        return 7

    assert run_handler(mux, fastq.Task("report:daily"), task_id="r1", queue="low") == 7
    assert calls == [("mw", "r1"), ("report", "report:daily", "low")]
    with pytest.raises(fastq.HandlerNotFoundError, match="email:x"):
        run_handler(mux, fastq.Task("email:x"))


def test_run_handler_with_a_servemux_of_async_handlers():
    mux = fastq.ServeMux()

    @mux.handle("a")
    async def a(task):
        return fastq.get_task_id()

    assert run_handler(mux, fastq.Task("a"), task_id="x1") == "x1"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_run_handler_raises_what_the_handler_raises(kind):
    if kind == "sync":
        def handler(task):
            raise fastq.SkipRetry("bad input")
    else:
        async def handler(task):
            raise fastq.SkipRetry("bad input")
    with pytest.raises(fastq.SkipRetry, match="bad input: skip retry for the task"):
        run_handler(handler, fastq.Task("t"))
    assert_outside_a_handler()


def test_run_handler_async_handler_is_cancelled_at_its_deadline():
    state = {}

    async def slow(task):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    start = time.monotonic()
    with pytest.raises(TaskCanceledError, match="context deadline exceeded"):
        run_handler(slow, fastq.Task("t"), deadline=timedelta(seconds=0.1))
    assert time.monotonic() - start < 2 and state == {"cancelled": True}


def test_run_handler_deadline_forms_and_a_sync_handler_past_its_deadline_fails():
    deadlines = []

    def handler(task):
        deadlines.append(fastq.current_task().deadline)
        time.sleep(0.15)

    when = datetime.now(timezone.utc) + timedelta(hours=1)
    run_handler(handler, fastq.Task("t"), deadline=when)
    run_handler(handler, fastq.Task("t"), deadline=when.timestamp())
    assert deadlines == [when.timestamp(), when.timestamp()]
    with pytest.raises(TaskCanceledError, match="context deadline exceeded"):
        run_handler(handler, fastq.Task("t"), deadline=timedelta(seconds=0.05))


def test_is_cancelled_turns_true_at_the_deadline():
    polls = []

    def polling(task):  # a long sync handler that checks between steps, as the docs advise
        assert not fastq.is_cancelled()
        while not fastq.is_cancelled():
            polls.append(1)
            time.sleep(0.01)
        return "stopped"

    start = time.monotonic()
    with pytest.raises(TaskCanceledError, match="context deadline exceeded"):
        run_handler(polling, fastq.Task("t"), deadline=timedelta(seconds=0.1))
    assert 0.05 < time.monotonic() - start < 2 and polls

    async def catching(task):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append(fastq.is_cancelled())
            raise

    seen = []
    with pytest.raises(TaskCanceledError):
        run_handler(catching, fastq.Task("t"), deadline=timedelta(seconds=0.05))
    assert seen == [True]
    assert run_handler(lambda task: fastq.is_cancelled(), fastq.Task("t")) is False


def test_a_deadline_in_the_past_fails_an_async_handler_before_it_runs():
    ran = []

    async def handler(task):
        ran.append(1)

    with pytest.raises(TaskCanceledError):
        run_handler(handler, fastq.Task("t"), deadline=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert ran == []


def test_run_handler_refuses_a_sync_handler_that_returns_a_coroutine():
    async def inner(task):
        return 1

    def sneaky(task):  # a sync wrapper around an async function: the worker refuses it too
        return inner(task)

    with pytest.raises(TypeError, match="declare it with 'async def'"):
        run_handler(sneaky, fastq.Task("t"))


def test_run_handler_inside_a_running_loop_points_to_arun_handler():
    async def handler(task):
        return 1

    async def main():
        with pytest.raises(RuntimeError, match="arun_handler"):
            run_handler(handler, fastq.Task("t"))
        return await arun_handler(handler, fastq.Task("t"))

    assert asyncio.run(main()) == 1


def test_arun_handler_runs_sync_handlers_in_a_thread_with_the_context():
    import threading

    def handler(task):
        return fastq.get_task_id(), threading.current_thread().name

    async def main():
        result = await arun_handler(handler, fastq.Task("t"), task_id="s1")
        assert fastq.current_task() is None  # the caller's context is untouched
        return result, threading.current_thread().name

    (tid, thread), main_thread = asyncio.run(main())
    assert tid == "s1" and thread != main_thread


@pytest.mark.parametrize("kwargs, error, match", [
    ({"task_id": ""}, ValueError, "task_id must not be empty"),
    ({"task_id": 5}, TypeError, "task_id must be a str, not int"),
    ({"retry_count": -1}, ValueError, "retry_count must not be negative"),
    ({"retry_count": True}, TypeError, "retry_count must be an int, not bool"),
    ({"max_retry": 1.5}, TypeError, "max_retry must be an int, not float"),
    ({"queue": " "}, ValueError, "queue must not be empty or blank"),
    ({"headers": {"a": 1}}, TypeError, "headers must map str to str"),
    ({"headers": [("a", "b")]}, TypeError, "headers must be a mapping"),
    ({"deadline": 30}, ValueError, r"timedelta\(seconds=30\)"),
    ({"deadline": "soon"}, TypeError, "deadline must be a datetime, timedelta or time.time"),
])
def test_run_handler_bad_input(kwargs, error, match):
    called = []
    with pytest.raises(error, match=match):
        run_handler(lambda task: called.append(task), fastq.Task("t"), **kwargs)
    assert called == []


def test_run_handler_bad_handler_or_task():
    with pytest.raises(TypeError, match="task must be a fastq.Task, not bytes"):
        run_handler(lambda t: None, b"payload")
    with pytest.raises(TypeError, match="handler must be a ServeMux or a callable, not str"):
        run_handler("handler", fastq.Task("t"))


# ------------------------------------------------------------------ task_context

def deep_inside():
    return fastq.get_task_id(), fastq.get_queue_name()


def test_task_context_sets_and_restores_the_context():
    with task_context("outer", queue="q1", type="t:outer") as outer:
        assert deep_inside() == ("outer", "q1")
        assert fastq.current_task() is outer and outer.type == "t:outer"
        with task_context("inner", headers={"fastq-root-id": "r"}):
            assert deep_inside() == ("inner", "default")
            assert fastq.get_root_task_id() == "r"
        assert fastq.current_task() is outer
    assert_outside_a_handler()


def test_task_context_restores_after_an_exception():
    with pytest.raises(KeyError):
        with task_context("x"):
            raise KeyError("boom")
    assert_outside_a_handler()


def test_task_context_works_around_awaits_and_as_a_decorator():
    async def main():
        with task_context("a1", retry_count=3):
            await asyncio.sleep(0)
            return fastq.get_task_id(), fastq.get_retry_count()

    assert asyncio.run(main()) == ("a1", 3)

    @task_context("deco")
    def decorated():
        return fastq.get_task_id()

    assert decorated() == "deco"
    assert_outside_a_handler()


def test_task_context_bad_input():
    with pytest.raises(TypeError, match="type must be a str, not int"):
        with task_context(type=3):
            pass
    with pytest.raises(ValueError, match="retry_count must not be negative"):
        with task_context(retry_count=-2):
            pass
    assert_outside_a_handler()


# ------------------------------------------------------------------ the pytest plugin

def test_plugin_is_registered_by_its_entry_point(request):
    import fastq.pytest_plugin

    assert request.config.pluginmanager.get_plugin("fastq") is fastq.pytest_plugin


def test_fastq_redis_url_is_a_private_empty_redis(fastq_redis_url, redis_url):
    assert fastq_redis_url != redis_url  # not the suite's own server, and never 6379
    assert ":6379/" not in fastq_redis_url
    client = redis.Redis.from_url(fastq_redis_url)
    try:
        assert client.dbsize() == 0
        client.set("left-over", "1")  # the next test that uses the fixture starts empty again
    finally:
        client.close()


def test_fastq_redis_url_is_flushed_between_tests(fastq_redis_url):
    client = redis.Redis.from_url(fastq_redis_url)
    try:
        assert client.get("left-over") is None and client.dbsize() == 0
    finally:
        client.close()


def test_start_test_redis_skips_without_redis_server(monkeypatch):
    from fastq.pytest_plugin import start_test_redis

    monkeypatch.delenv("FASTQ_TEST_REDIS_URL", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y redis-server"):
        start_test_redis(find=lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="FASTQ_TEST_REDIS_URL"):
        start_test_redis(find=lambda: None)
    monkeypatch.setenv("FASTQ_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
    assert start_test_redis(find=lambda: None) is None  # the given Redis is used instead


def test_client_and_worker_fixtures_drain_a_queue(fastq_client, fastq_worker):
    mux = fastq.ServeMux()
    seen = []

    @mux.handle("ok")
    async def ok(task):
        seen.append(fastq.get_task_id())
        return "fine"

    @mux.handle("skip")
    def skip(task):
        raise fastq.SkipRetry("no such user")

    @mux.handle("flaky")
    async def flaky(task):
        raise ValueError("try later")

    @mux.handle("revoke")
    def revoke(task):
        raise fastq.RevokeTask()

    ids = {name: fastq_client.enqueue(fastq.Task(name, b"x")).id for name in ("ok", "skip", "flaky", "revoke")}
    result = fastq_worker(mux).drain()
    assert result.succeeded == [ids["ok"]] and seen == [ids["ok"]]
    assert result.archived == [ids["skip"]]
    assert result.retried == [ids["flaky"]]
    assert result.revoked == [ids["revoke"]]
    assert result.processed == 4
    assert sorted(result.failed) == sorted([ids["skip"], ids["flaky"]])
    assert isinstance(result.errors[ids["flaky"]], ValueError)
    assert result.stored_errors == {ids["skip"]: "no such user: skip retry for the task",
                                    ids["flaky"]: "ValueError: try later"}
    ok_run = next(run for run in result.runs if run.id == ids["ok"])
    assert ok_run.result == "fine" and ok_run.type == "ok" and ok_run.queue == "default" and ok_run.retry_count == 0
    # The states are the worker's real writes.
    r = fastq_client.redis
    assert r.zscore(keys.archived_key("default"), ids["skip"]) is not None
    assert r.zscore(keys.retry_key("default"), ids["flaky"]) is not None
    assert r.exists(keys.task_key("default", ids["ok"])) == 0
    # A second drain of the now idle queue does nothing.
    again = fastq_worker(mux).drain()
    assert again.processed == 0 and again.succeeded == again.archived == again.retried == []


def test_drain_runs_tasks_the_handlers_enqueue_and_due_retries(fastq_redis_url, fastq_client, fastq_worker):
    attempts = []

    def handler(task):
        attempts.append((task.type, fastq.get_retry_count()))
        if task.type == "parent":
            with fastq.Client(fastq_redis_url) as client:
                client.enqueue(fastq.Task("child", b"c"))
        elif fastq.get_retry_count() == 0:
            raise RuntimeError("first attempt fails")

    fastq_client.enqueue(fastq.Task("parent", b"p"))
    result = fastq_worker(handler, retry_delay=lambda *args: 0).drain(timeout=10)
    assert attempts == [("parent", 0), ("child", 0), ("child", 1)]
    child = [run for run in result.runs if run.type == "child"]
    assert child[0].id == child[1].id and isinstance(child[0].error, RuntimeError) and child[1].error is None
    assert len(result.succeeded) == 2 and result.retried == [] and result.failed == []
    assert child[0].headers["fastq-parent-id"] == result.runs[0].id  # lineage, see test_lineage.py


def test_drain_waits_for_due_scheduled_tasks_only(fastq_client, fastq_worker, r_plugin):
    due = fastq_client.enqueue(fastq.Task("t", b"due"), process_in=3600)
    later = fastq_client.enqueue(fastq.Task("t", b"later"), process_in=3600)
    r_plugin.zadd(keys.scheduled_key("default"), {due.id: time.time() - 1}, xx=True)  # its time has come
    result = fastq_worker(lambda task: task.payload).drain()
    assert [run.payload for run in result.runs] == [b"due"] and result.succeeded == [due.id]
    assert r_plugin.zscore(keys.scheduled_key("default"), later.id) is not None


def test_drain_reports_undecodable_messages_as_archived(fastq_worker, r_plugin):
    r_plugin.hset(keys.task_key("default", "junk-1"), mapping={"msg": b"\xff\xff", "state": "pending"})
    r_plugin.lpush(keys.pending_key("default"), "junk-1")
    result = fastq_worker(lambda task: None).drain()
    assert result.runs == [] and result.archived == ["junk-1"]
    assert result.stored_errors["junk-1"].startswith("cannot decode task message")


def test_drain_several_queues(fastq_client, fastq_worker):
    a = fastq_client.enqueue(fastq.Task("t", b"a"), queue="critical")
    b = fastq_client.enqueue(fastq.Task("t", b"b"), queue="low")
    result = fastq_worker(lambda task: fastq.get_queue_name(), queues={"critical": 2, "low": 1}).drain()
    assert sorted((run.queue, run.result) for run in result.runs) == [("critical", "critical"), ("low", "low")]
    assert sorted(result.succeeded) == sorted([a.id, b.id])
    only_low = fastq_client.enqueue(fastq.Task("t", b"c"), queue="low")
    crit = fastq_client.enqueue(fastq.Task("t", b"d"), queue="critical")
    result = fastq_worker(lambda task: None).drain(queue="low")
    assert result.succeeded == [only_low.id]
    assert fastq_client.redis.lrange(keys.pending_key("critical"), 0, -1) == [crit.id.encode()]


def test_drain_timeout_stops_the_worker_and_puts_the_task_back(fastq_client, fastq_worker):
    info = fastq_client.enqueue(fastq.Task("slow", b""))

    async def slow(task):
        await asyncio.sleep(30)

    start = time.monotonic()
    with pytest.raises(DrainTimeoutError, match=r"not drained after 0.3s: default.active=1") as caught:
        fastq_worker(slow).drain(timeout=0.3)
    assert time.monotonic() - start < 5
    assert caught.value.busy == {"default.active": 1} and caught.value.result.processed == 1
    assert isinstance(caught.value, TimeoutError)
    assert fastq_client.redis.lrange(keys.pending_key("default"), 0, -1) == [info.id.encode()]


def test_adrain_inside_an_async_test(fastq_redis_url, fastq_worker):
    async def handler(task):
        return fastq.get_task_id()

    async def main():
        async with fastq.AsyncClient(fastq_redis_url) as client:
            info = await client.enqueue(fastq.Task("t", b""))
        harness = fastq_worker(handler)
        with pytest.raises(RuntimeError, match="adrain"):
            harness.drain()
        result = await harness.adrain()
        return info.id, result

    tid, result = asyncio.run(main())
    assert result.succeeded == [tid] and result.runs[0].result == tid


def test_worker_harness_bad_input(fastq_redis_url, fastq_worker):
    with pytest.raises(TypeError, match="handler must be a ServeMux or a callable, not int"):
        fastq_worker(42)
    with pytest.raises(TypeError, match="concurency"):
        fastq_worker(lambda t: None, concurency=3)
    with pytest.raises(fastq.InvalidOptionError, match="concurrency"):
        fastq_worker(lambda t: None, concurrency=0)
    harness = WorkerHarness(lambda t: None, fastq_redis_url)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        harness.drain(timeout=0)
    with pytest.raises(ValueError, match="queue must not be empty"):
        harness.drain(queue="")
    with pytest.raises(ValueError, match="at least one queue"):
        harness.drain(queue=[])


@pytest.fixture
def r_plugin(fastq_redis_url):
    client = redis.Redis.from_url(fastq_redis_url)
    yield client
    client.close()


def test_drain_counts_completed_tasks_with_retention_as_succeeded(fastq_client, fastq_worker):
    kept = fastq_client.enqueue(fastq.Task("t", b"k"), retention=60)
    result = fastq_worker(lambda task: None).drain()
    assert result.succeeded == [kept.id]
    assert fastq_client.redis.hget(keys.task_key("default", kept.id), "state") == b"completed"
