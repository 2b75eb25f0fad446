"""A worker running in-process against a real Redis: outcomes, context, bad data, shutdown."""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time

import pytest
from helpers import RunningWorker, assert_golden_state, async_wait_for, task_log_records

import fastq
from fastq import keys
from fastq._codec import TaskMessage, decode_message, encode_message

SPEC_HEX = ("0a0d656d61696c3a64656c69766572120e7b22757365725f6964223a34327d1a0d6f7261636c652d7461736b2d31"
            "220764656661756c74280340880e60901c")
PAYLOAD = b'{"user_id":42}'
DELIBERATE = "deliberate failure (retry_count=0 < 1)"


def _uvloop_run(coro):
    import uvloop

    return uvloop.run(coro)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine on the stdlib loop or on uvloop (the workers' default)."""
    return asyncio.run if request.param == "asyncio" else _uvloop_run


def seed_raw(r, queue: str, tid: str, msg: bytes) -> None:
    """Write a pending task exactly as Go Asynq's client does (no fastq code involved)."""
    r.sadd("asynq:queues", queue)
    r.hset(f"asynq:{{{queue}}}:t:{tid}", mapping={"msg": msg, "state": "pending", "pending_since": time.time_ns()})
    r.lpush(f"asynq:{{{queue}}}:pending", tid)


def test_runs_a_task_written_in_asynq_layout(redis_url, r, run):
    seed_raw(r, "default", "oracle-task-1", bytes.fromhex(SPEC_HEX))
    seen = []

    async def handler(task):
        seen.append((fastq.get_task_id(), fastq.get_retry_count(), fastq.get_max_retry(),
                     fastq.get_queue_name(), task.type, task.payload))

    async def main():
        async with RunningWorker(handler, redis_url):
            await async_wait_for(lambda: r.zcard("asynq:{default}:completed"), what="completion")

    run(main())
    assert seen == [("oracle-task-1", 0, 3, "default", "email:deliver", PAYLOAD)]
    fields = r.hgetall("asynq:{default}:t:oracle-task-1")
    assert fields[b"state"] == b"completed"
    msg = decode_message(fields[b"msg"])
    assert abs(msg.completed_at - time.time()) < 5
    assert r.zscore("asynq:{default}:completed", "oracle-task-1") == msg.completed_at + 3600
    assert r.get("asynq:{default}:processed") == b"1"
    assert r.llen("asynq:{default}:active") == 0 and r.zcard("asynq:{default}:lease") == 0


def _process_one(redis_url, r, handler, wait, task_kwargs, task=("email:deliver", PAYLOAD), **worker_kwargs):
    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task(*task), **task_kwargs)

    async def main():
        async with RunningWorker(handler, redis_url, **worker_kwargs):
            await async_wait_for(wait, what="task outcome")

    asyncio.run(main())
    client.close()


def test_retry_state_matches_go(redis_url, r):
    async def handler(task):
        raise Exception(DELIBERATE)

    _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:retry"),
                 {"task_id": "st-retry", "max_retry": 3}, retry_delay=lambda n, e, t: 3600)
    assert_golden_state(r, "retry")
    msg = decode_message(r.hget("asynq:{default}:t:st-retry", "msg"))
    assert r.zscore("asynq:{default}:retry", "st-retry") == msg.last_failed_at + 3600


def test_archived_state_matches_go(redis_url, r):
    async def handler(task):
        raise Exception(DELIBERATE)

    _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:archived"),
                 {"task_id": "st-archived", "max_retry": 0})
    assert_golden_state(r, "archived")


def test_skip_retry_state_matches_go(redis_url, r):
    def handler(task):  # a sync handler, run in the thread pool
        raise fastq.SkipRetry(DELIBERATE)

    _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:archived"),
                 {"task_id": "st-skipretry", "max_retry": 3})
    assert_golden_state(r, "archived_skip_retry")


def test_done_state_matches_go(redis_url, r):
    async def handler(task):
        return None

    _process_one(redis_url, r, handler, lambda: r.get("asynq:{default}:processed"), {"task_id": "st-done"})
    assert_golden_state(r, "completed_no_retention")


def test_unique_lock_released_after_success(redis_url, r):
    async def handler(task):
        return None

    _process_one(redis_url, r, handler, lambda: r.get("asynq:{default}:processed"),
                 {"task_id": "st-uniq-done", "unique": 3600})
    assert_golden_state(r, "unique_released_after_success")


def test_active_state_matches_go_then_shutdown(redis_url, r):
    release = asyncio.Event()

    async def handler(task):
        await release.wait()

    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("slow", b"zz"), task_id="st-active")

    async def main():
        async with RunningWorker(handler, redis_url, concurrency=3, heartbeat_interval=0.2) as w:
            await async_wait_for(lambda: r.hlen(w.worker.heartbeater.workers_key), what="worker info")
            # the claim's lease token is fastq's fencing field; Go ignores extra hash fields
            assert_golden_state(r, "active", extra_fields=("lease_token",))
            assert r.hget("asynq:{default}:t:st-active", "lease_token").startswith(
                w.worker.heartbeater.server_id.encode())
            release.set()
            await async_wait_for(lambda: r.get("asynq:{default}:processed"), what="done")

    asyncio.run(main())
    assert_golden_state(r, "after_server_shutdown")


def test_context_is_per_task_for_concurrent_async_handlers(redis_url, r, run):
    n = 600
    seen: dict[bytes, str] = {}
    errors = []

    async def handler(task):
        tid = fastq.get_task_id()
        await asyncio.sleep(random.random() * 0.02)
        if fastq.get_task_id() != tid or fastq.current_task().task_id != tid:
            errors.append(task.payload)
        seen[task.payload] = tid

    infos = fastq.Client(redis_url).enqueue_many([fastq.Task("ctx", b"%d" % i) for i in range(n)])

    async def main():
        async with RunningWorker(handler, redis_url, concurrency=200, batch_size=50):
            await async_wait_for(lambda: len(seen) == n, what="all tasks")

    run(main())
    assert not errors
    assert seen == {b"%d" % i: info.id for i, info in enumerate(infos)}


def test_context_is_per_task_for_sync_handlers_in_threads(redis_url, r):
    n = 200
    seen: dict[bytes, tuple] = {}
    lock = threading.Lock()

    def handler(task):
        tid = fastq.get_task_id()
        time.sleep(random.random() * 0.01)
        with lock:
            seen[task.payload] = (tid, fastq.get_task_id(), threading.current_thread().name)

    infos = fastq.Client(redis_url).enqueue_many([fastq.Task("ctx", b"%d" % i) for i in range(n)])

    async def main():
        async with RunningWorker(handler, redis_url, concurrency=20):
            await async_wait_for(lambda: len(seen) == n, what="all tasks")

    asyncio.run(main())
    assert {k: v[0] for k, v in seen.items()} == {b"%d" % i: info.id for i, info in enumerate(infos)}
    assert all(a == b for a, b, _ in seen.values())
    assert len({name for *_, name in seen.values()}) > 1  # really ran on several threads


def test_context_is_absent_outside_handlers():
    assert fastq.current_task() is None
    for fn in (fastq.get_task_id, fastq.get_retry_count, fastq.get_max_retry, fastq.get_queue_name):
        with pytest.raises(fastq.NoTaskContextError, match="outside a task handler"):
            fn()
    with pytest.raises(LookupError):
        fastq.get_task_id()


def test_log_records_carry_the_task_id(redis_url, r):
    logger = logging.getLogger("test.handler")

    async def async_handler(task):
        logger.info("async says hi")

    def sync_handler(task):
        logger.info("sync says hi", extra={"queue": "explicit"})

    mux = fastq.ServeMux()
    mux.handle("a", async_handler)
    mux.handle("s", sync_handler)
    client = fastq.Client(redis_url)
    a = client.enqueue(fastq.Task("a"))
    s = client.enqueue(fastq.Task("s"))
    with task_log_records("test.handler") as records:
        async def main():
            async with RunningWorker(mux, redis_url):
                await async_wait_for(lambda: len(records) == 2, what="log records")
        asyncio.run(main())
        logger.info("outside")
    by_msg = {rec.getMessage(): rec for rec in records}
    assert by_msg["async says hi"].task_id == a.id and by_msg["async says hi"].task_type == "a"
    assert by_msg["sync says hi"].task_id == s.id
    assert by_msg["sync says hi"].queue == "explicit"  # extra= wins over the filter
    assert by_msg["outside"].task_id == "-"


def test_undecodable_message_is_archived_and_worker_keeps_going(redis_url, r):
    garbage = b"\x0a\x05abc"  # a string field longer than the data
    seed_raw(r, "default", "bad-1", garbage)
    r.lpush("asynq:{default}:pending", "no-hash")  # an ID whose task hash is gone
    seed_raw(r, "default", "bad-2", encode_message(TaskMessage(type="", id="bad-2", queue="default")))
    done = []

    async def handler(task):
        done.append(fastq.get_task_id())

    infos = fastq.Client(redis_url).enqueue_many([fastq.Task("ok")] * 5)

    async def main():
        async with RunningWorker(handler, redis_url):
            await async_wait_for(lambda: len(done) == 5 and r.zcard("asynq:{default}:archived") == 3, what="outcomes")

    asyncio.run(main())
    assert sorted(done) == sorted(i.id for i in infos)
    bad = r.hgetall("asynq:{default}:t:bad-1")
    assert bad[b"state"] == b"archived"
    msg = decode_message(bad[b"msg"])  # the archived record decodes (Inspector/asynqmon can show it)
    assert msg.type == "fastq:undecodable" and msg.payload == garbage and msg.id == "bad-1"
    assert "cannot decode task message" in msg.error_msg
    assert "no message" in decode_message(r.hget("asynq:{default}:t:no-hash", "msg")).error_msg
    assert "no task type" in decode_message(r.hget("asynq:{default}:t:bad-2", "msg")).error_msg
    assert r.llen("asynq:{default}:active") == 0 and r.zcard("asynq:{default}:lease") == 0


def test_async_handler_is_cancelled_at_its_timeout(redis_url, r):
    started = time.monotonic()
    cancelled = []

    async def handler(task):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(time.monotonic() - started)
            raise

    _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:retry"), {"timeout": 1, "task_id": "slow"})
    msg = decode_message(r.hget("asynq:{default}:t:slow", "msg"))
    assert msg.error_msg == "context deadline exceeded" and msg.retried == 1
    assert cancelled and cancelled[0] < 5


def test_sync_handler_past_deadline_is_failed_without_waiting(redis_url, r):
    gate = threading.Event()

    def handler(task):
        gate.wait(10)

    try:
        _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:retry"), {"timeout": 1, "task_id": "s"})
    finally:
        gate.set()
    assert decode_message(r.hget("asynq:{default}:t:s", "msg")).error_msg == "context deadline exceeded"


def test_graceful_shutdown_requeues_unfinished_tasks(redis_url, r):
    async def handler(task):
        await asyncio.sleep(60)

    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("slow"), task_id="first")
    client.enqueue(fastq.Task("other"), task_id="second", queue="elsewhere")

    async def main():
        async with RunningWorker(handler, redis_url, shutdown_timeout=0.3) as w:
            await async_wait_for(lambda: len(w.worker.processor.running) == 1, what="task start")

    asyncio.run(main())
    assert r.lrange("asynq:{default}:pending", 0, -1) == [b"first"]
    assert r.hget("asynq:{default}:t:first", "state") == b"pending"
    assert r.llen("asynq:{default}:active") == 0 and r.zcard("asynq:{default}:lease") == 0
    assert r.get("asynq:{default}:processed") is None  # a requeue is not an attempt
    assert not r.keys("asynq:servers:*") and not r.zcard("asynq:servers")


def test_immediate_stop_requeues_at_once(redis_url, r):
    async def handler(task):
        await asyncio.sleep(60)

    fastq.Client(redis_url).enqueue(fastq.Task("slow"), task_id="t1")

    async def main():
        w = RunningWorker(handler, redis_url, shutdown_timeout=30)
        await w.__aenter__()
        await async_wait_for(lambda: w.worker.processor.running, what="task start")
        t0 = time.monotonic()
        await w.stop(immediate=True)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 5
    assert r.lrange("asynq:{default}:pending", 0, -1) == [b"t1"]


def test_an_idle_worker_stops_without_waiting_out_its_idle_wait(redis_url, r, monkeypatch):
    """A graceful stop ends the fetch loop's idle wait (up to --poll-interval) at once."""
    import fastq.server.processor as processor_module

    monkeypatch.setattr(processor_module, "POLL_MIN", 20.0)  # the first idle wait is 20 s

    async def main():
        w = RunningWorker(lambda task: None, redis_url, poll_interval=30)
        await w.__aenter__()
        await asyncio.sleep(0.3)  # the queues were empty: the fetch loop is in its idle wait
        t0 = time.monotonic()
        await w.stop()
        return time.monotonic() - t0

    assert asyncio.run(main()) < 5


def test_revoke_task_drops_it(redis_url, r):
    async def handler(task):
        raise fastq.RevokeTask()

    _process_one(redis_url, r, handler, lambda: r.get("asynq:{default}:processed"), {"task_id": "rv"})
    assert not r.exists("asynq:{default}:t:rv") and not r.zcard("asynq:{default}:retry")


def test_unknown_task_type_is_retried(redis_url, r):
    mux = fastq.ServeMux()
    _process_one(redis_url, r, mux, lambda: r.zcard("asynq:{default}:retry"), {"task_id": "nf"}, task=("nobody",))
    msg = decode_message(r.hget("asynq:{default}:t:nf", "msg"))
    assert msg.error_msg == "HandlerNotFoundError: handler not found for task 'nobody'"


def test_strict_priority_serves_high_weight_queue_first(redis_url, r):
    order = []

    async def handler(task):
        order.append(fastq.get_queue_name())

    client = fastq.Client(redis_url)
    client.enqueue_many([fastq.Task("t")] * 30, queue="low")
    client.enqueue_many([fastq.Task("t")] * 30, queue="critical")

    async def main():
        async with RunningWorker(handler, redis_url, queues={"critical": 6, "low": 1}, strict_priority=True,
                                 concurrency=5, batch_size=5):
            await async_wait_for(lambda: len(order) == 60, what="all tasks")

    asyncio.run(main())
    assert order == ["critical"] * 30 + ["low"] * 30


def test_paused_queue_is_skipped(redis_url, r):
    done = []

    async def handler(task):
        done.append(fastq.get_queue_name())

    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("t"), queue="paused")
    client.enqueue(fastq.Task("t"), queue="open")
    r.set("asynq:{paused}:paused", int(time.time()))

    async def main():
        async with RunningWorker(handler, redis_url, queues="paused,open"):
            await async_wait_for(lambda: done, what="open queue")
            await asyncio.sleep(0.3)
            assert done == ["open"]
            r.delete("asynq:{paused}:paused")
            await async_wait_for(lambda: len(done) == 2, what="unpaused queue")

    asyncio.run(main())


def test_heartbeat_extends_leases(redis_url, r):
    release = asyncio.Event()

    async def handler(task):
        await release.wait()

    fastq.Client(redis_url).enqueue(fastq.Task("slow"), task_id="held")

    async def main():
        async with RunningWorker(handler, redis_url, heartbeat_interval=0.2):
            await async_wait_for(lambda: r.zscore("asynq:{default}:lease", "held"), what="lease")
            r.zadd("asynq:{default}:lease", {"held": int(time.time()) + 2}, xx=True)  # about to expire
            await async_wait_for(lambda: r.zscore("asynq:{default}:lease", "held") >= int(time.time()) + 6,
                                 what="extended lease")
            release.set()

    asyncio.run(main())


def test_expired_lease_of_a_dead_worker_is_recovered(redis_url, r):
    msg = TaskMessage(type="t", id="orphan", queue="default", retry=5, timeout=1800)
    r.sadd("asynq:queues", "default")
    r.hset("asynq:{default}:t:orphan", mapping={"msg": encode_message(msg), "state": "active"})
    r.lpush("asynq:{default}:active", "orphan")
    r.zadd("asynq:{default}:lease", {"orphan": int(time.time()) - 60})

    async def handler(task):
        raise AssertionError("the recovered task is not due yet")

    async def main():
        async with RunningWorker(handler, redis_url, retry_delay=lambda n, e, t: 3600):
            await async_wait_for(lambda: r.zcard("asynq:{default}:retry"), what="recovery")

    asyncio.run(main())
    recovered = decode_message(r.hget("asynq:{default}:t:orphan", "msg"))
    assert recovered.error_msg == "asynq: task lease expired" and recovered.retried == 1
    assert r.hget("asynq:{default}:t:orphan", "state") == b"retry"
    assert r.llen("asynq:{default}:active") == 0 and r.zcard("asynq:{default}:lease") == 0


def test_scheduled_and_retried_tasks_run_when_due(redis_url, r):
    attempts = []

    async def handler(task):
        attempts.append((task.type, fastq.get_retry_count()))
        if task.type == "flaky" and fastq.get_retry_count() == 0:
            raise ValueError("first try fails")

    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("later"), process_in=1)
    client.enqueue(fastq.Task("flaky"))

    async def main():
        async with RunningWorker(handler, redis_url, retry_delay=lambda n, e, t: 1):
            await async_wait_for(lambda: len(attempts) == 3, timeout=15, what="scheduled + retried")

    asyncio.run(main())
    assert sorted(attempts) == [("flaky", 0), ("flaky", 1), ("later", 0)]
    assert r.get("asynq:{default}:processed") == b"3" and r.get("asynq:{default}:failed") == b"1"


def test_is_failure_false_does_not_count(redis_url, r):
    async def handler(task):
        raise ConnectionError("upstream busy")

    _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:retry"), {"task_id": "nf"},
                 is_failure=lambda exc: not isinstance(exc, ConnectionError))
    assert decode_message(r.hget("asynq:{default}:t:nf", "msg")).retried == 0
    assert r.get("asynq:{default}:failed") is None


def test_error_handler_sees_task_and_context(redis_url, r):
    seen = []

    def on_error(task, exc):
        seen.append((task.type, type(exc).__name__, fastq.get_task_id()))

    async def handler(task):
        raise KeyError("k")

    _process_one(redis_url, r, handler, lambda: seen, {"task_id": "eh"}, error_handler=on_error)
    assert seen == [("email:deliver", "KeyError", "eh")]


def test_survives_script_flush(redis_url, r):
    done = []

    async def handler(task):
        done.append(1)
        r.script_flush()

    fastq.Client(redis_url).enqueue_many([fastq.Task("t")] * 20)

    async def main():
        async with RunningWorker(handler, redis_url, batch_size=3, concurrency=3):
            await async_wait_for(lambda: r.get("asynq:{default}:processed") == b"20", what="all acked")

    asyncio.run(main())


def test_system_exit_in_a_handler_fails_only_that_task(redis_url, r):
    async def handler(task):
        if task.type == "exit":
            raise SystemExit(3)

    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("exit"), task_id="se")
    client.enqueue(fastq.Task("fine"), task_id="ok")

    async def main():
        async with RunningWorker(handler, redis_url):
            await async_wait_for(lambda: r.zcard("asynq:{default}:retry")
                                 and r.get("asynq:{default}:processed") == b"2",
                                 what="both outcomes")

    asyncio.run(main())
    assert decode_message(r.hget("asynq:{default}:t:se", "msg")).error_msg == "SystemExit: 3"


def test_completed_with_retention_and_result_writer_matches_go(redis_url, r):
    async def handler(task):
        await fastq.result_writer().awrite(b"done!")

    _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:completed"),
                 {"task_id": "st-completed", "retention": 3600})
    assert_golden_state(r, "completed_with_retention")
    msg = decode_message(r.hget("asynq:{default}:t:st-completed", "msg"))
    assert r.zscore("asynq:{default}:completed", "st-completed") == msg.completed_at + 3600


def test_returned_bytes_become_the_result(redis_url, r):
    def handler(task):  # a sync handler: its return value is stored too
        fastq.result_writer().write(b"partial")
        return b"final"

    _process_one(redis_url, r, handler, lambda: r.zcard("asynq:{default}:completed"),
                 {"task_id": "res", "retention": 60})
    assert r.hget("asynq:{default}:t:res", "result") == b"final"
    assert fastq.Inspector(redis_url).get_task_info("default", "res").result == b"final"


def test_result_writer_misuse_is_clear(redis_url, r):
    errors = []

    async def handler(task):
        for call in (lambda: fastq.result_writer().write(b"x"), lambda: fastq.result_writer().awrite("text")):
            try:
                result = call()
                if asyncio.iscoroutine(result):
                    await result
            except (RuntimeError, TypeError) as exc:
                errors.append(str(exc))

    _process_one(redis_url, r, handler, lambda: r.get("asynq:{default}:processed"), {"task_id": "m"})
    assert "would block the event loop" in errors[0] and "must be bytes" in errors[1]
    with pytest.raises(fastq.NoTaskContextError):
        fastq.result_writer()


def test_janitor_deletes_expired_completed_tasks(redis_url, r):
    for i in range(250):
        r.hset(f"asynq:{{default}}:t:c{i}", mapping={"msg": b"x", "state": "completed"})
        r.zadd("asynq:{default}:completed", {f"c{i}": 1000 + i if i < 240 else int(time.time()) + 3600})

    async def main():
        async with RunningWorker(lambda t: None, redis_url, janitor_interval=0.1):
            await async_wait_for(lambda: r.zcard("asynq:{default}:completed") == 10, what="janitor")

    asyncio.run(main())
    assert not r.exists("asynq:{default}:t:c0") and r.exists("asynq:{default}:t:c245")


def test_hooks_observe_every_task(redis_url, r):
    seen = []

    class Observer:
        def task_started(self, ctx):
            seen.append(("start", ctx.task_id))

        def task_finished(self, ctx, outcome, exc, seconds):
            seen.append((outcome, ctx.task_id, type(exc).__name__ if exc else None, seconds >= 0))

    class Broken:
        def task_finished(self, *args):
            raise RuntimeError("observer bug")

    async def handler(task):
        if task.type == "bad":
            raise ValueError("x")

    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("good"), task_id="g")
    client.enqueue(fastq.Task("bad"), task_id="b", max_retry=0)

    async def main():
        async with RunningWorker(handler, redis_url, hooks=[Observer(), Broken()]):
            await async_wait_for(lambda: len(seen) == 4, what="hooks")

    asyncio.run(main())
    assert sorted(seen) == sorted([("start", "g"), ("start", "b"), ("done", "g", None, True),
                                   ("archive", "b", "ValueError", True)])


def test_idle_worker_is_woken_by_enqueue_not_by_polling(redis_url, r):
    started = []

    async def handler(task):
        started.append(time.monotonic())

    async def main():
        async with RunningWorker(handler, redis_url, poll_interval=10.0):
            await asyncio.sleep(0.5)  # let the fetch loop back off into its long idle wait
            client = fastq.AsyncClient(redis_url)
            t0 = time.monotonic()
            await client.enqueue(fastq.Task("wake"))
            await async_wait_for(lambda: started, timeout=5, what="pickup")
            await client.close()
            return started[0] - t0

    assert asyncio.run(main()) < 2.0  # far below the 10 s poll interval: the notification woke it


def test_notification_is_published_only_when_a_queue_stops_being_empty(redis_url, r):
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.notify_channel("default"))
    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("a"))
    client.enqueue(fastq.Task("b"))
    client.enqueue_many([fastq.Task("c")] * 5)
    messages = []
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.1)
        if m:
            messages.append(m)
    assert len(messages) == 1  # only the first enqueue found the queue empty
    pubsub.close()


def test_doctor_accepts_groups_and_aggregation_sets(redis_url, r):
    from fastq import doctor

    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("g", b"1"), group="grp", task_id="in-group")
    assert doctor.check(r, "default") == []
    # a set taken out of the group for aggregation, as aggregation_check leaves it
    r.zadd("asynq:{default}:g:grp:set-1", {"in-set": 1})
    r.hset("asynq:{default}:t:in-set", mapping={"msg": encode_message(TaskMessage(type="g", id="in-set")),
                                                 "state": "aggregating", "group": "grp"})
    r.zadd("asynq:{default}:aggregation_sets", {"asynq:{default}:g:grp:set-1": 1})
    assert doctor.check(r, "default") == []
    r.hset("asynq:{default}:t:stray", mapping={"msg": b"x", "state": "pending"})
    assert any("stray" in p for p in doctor.check(r, "default"))
