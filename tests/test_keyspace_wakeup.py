"""WorkerConfig(keyspace_wakeup=True): tasks pushed by Go's client (no fastq_notify) wake idle workers.

Each test starts its own redis-server (CONFIG SET notify-keyspace-events must not leak into the
session server). poll_interval is 5 s, so a task that runs well before that was woken, not polled.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import pytest
import redis
from helpers import RedisServer, RunningWorker, async_wait_for, free_port

from fastq import keys
from fastq._codec import TaskMessage, encode_message
from fastq.server.keyspace import merged_flags

POLL = 5.0
Q = "ks"


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def go_enqueue(r: redis.Redis, queue: str, task_type: str = "go:task") -> str:
    """Write a task as Go Asynq's client does (and nothing else: no fastq_notify)."""
    tid = str(uuid.uuid4())
    msg = encode_message(TaskMessage(type=task_type, payload=b"{}", id=tid, queue=queue, retry=25, timeout=1800))
    pipe = r.pipeline(transaction=True)
    pipe.sadd(keys.ALL_QUEUES, queue)
    pipe.hset(keys.task_key(queue, tid), mapping={"msg": msg, "state": "pending",
                                                   "pending_since": str(time.time_ns())})
    pipe.lpush(keys.pending_key(queue), tid)
    pipe.execute()
    return tid


def _count_empty_dequeues(worker: RunningWorker) -> list[float]:
    """Record when each dequeue that found nothing returned: the fetch loop then sleeps."""
    broker = worker.worker.processor.broker
    dequeue, empty = broker.dequeue, []

    async def counted(*args, **kwargs):
        claims = await dequeue(*args, **kwargs)
        if not claims:
            empty.append(time.monotonic())
        return claims
    broker.dequeue = counted
    return empty


async def _pickup(r: redis.Redis, started: dict[str, float], empty: list[float]) -> float:
    """Push a Go-layout task just after an empty dequeue (the loop is in a POLL-long sleep) and
    return how long it took to start."""
    since = max(started.values(), default=0.0)
    await async_wait_for(lambda: empty and empty[-1] > since, timeout=3 * POLL, what="an empty dequeue")
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    tid = go_enqueue(r, Q)
    await async_wait_for(lambda: tid in started, timeout=3 * POLL, what="the Go-layout task to run")
    return started[tid] - t0


def _handler(started: dict[str, float]):
    async def handler(task):
        from fastq import get_task_id

        started[get_task_id()] = time.monotonic()
    return handler


def test_merged_flags_adds_k_and_l_and_keeps_the_rest():
    assert merged_flags("") == "Kl"
    assert merged_flags("Ex") == "ExKl"
    assert merged_flags("Kl") is None
    assert merged_flags("AK") is None
    assert merged_flags("KEA") is None
    assert merged_flags("El") == "ElK"


def test_go_layout_task_is_picked_up_before_a_poll_and_flags_are_merged(server, caplog, monkeypatch):
    # Every idle sleep is the full poll interval (no 1 ms back-off start): only a wake-up is quick.
    monkeypatch.setattr("fastq.server.processor.POLL_MIN", POLL)
    r = redis.Redis(port=server.port)
    r.config_set("notify-keyspace-events", "Ex")
    started: dict[str, float] = {}

    async def main() -> None:
        async with RunningWorker(_handler(started), server.url, queues={Q: 1}, poll_interval=POLL,
                                 keyspace_wakeup=True) as w:
            empty = _count_empty_dequeues(w)
            await async_wait_for(lambda: w.worker.keyspace is not None and
                                 r.pubsub_numsub(keys.keyspace_channel(0, Q))[0][1] == 1, what="subscription")
            flags = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
            assert {"E", "x", "K", "l"} <= set(flags), flags
            for _ in range(3):
                assert await _pickup(r, started, empty) < POLL / 2
            # unsubscribed once it had work, subscribed again (and confirmed) once idle: 1 + 3
            await async_wait_for(lambda: w.worker.keyspace.subscriptions >= 4, what="re-subscriptions")
            assert w.worker.keyspace.warned is False
            w.worker.processor.wake()  # end the POLL-long idle sleep, so the worker stops at once

    try:
        asyncio.run(main())
    finally:
        r.close()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING and "keyspace" in rec.getMessage()]


def test_a_worker_with_work_is_not_subscribed(server):
    r = redis.Redis(port=server.port)
    release = asyncio.Event()
    running: list[str] = []

    async def slow(task):
        running.append(task.type)
        await release.wait()

    async def main() -> None:
        async with RunningWorker(slow, server.url, queues={Q: 1}, poll_interval=POLL, concurrency=1,
                                 keyspace_wakeup=True) as w:
            channel = keys.keyspace_channel(0, Q)
            await async_wait_for(lambda: r.pubsub_numsub(channel)[0][1] == 1, what="the idle subscription")
            go_enqueue(r, Q)
            go_enqueue(r, Q)  # waits for the one slot
            await async_wait_for(lambda: running, what="the first task")
            await async_wait_for(lambda: r.pubsub_numsub(channel)[0][1] == 0, what="the unsubscription")
            events = w.worker.keyspace.events
            for _ in range(20):
                go_enqueue(r, Q)
            await asyncio.sleep(0.2)
            assert w.worker.keyspace.events == events  # a busy worker receives no keyspace message
            release.set()
            await async_wait_for(lambda: len(running) == 22, what="all tasks")
            await async_wait_for(lambda: r.pubsub_numsub(channel)[0][1] == 1, what="the subscription once idle")
            w.worker.processor.wake()

    try:
        asyncio.run(main())
    finally:
        r.close()


def test_without_the_flag_nothing_subscribes_and_config_is_untouched(server):
    r = redis.Redis(port=server.port)
    r.config_set("notify-keyspace-events", "")
    started: dict[str, float] = {}

    async def main() -> None:
        async with RunningWorker(_handler(started), server.url, queues={Q: 1}, poll_interval=0.05) as w:
            await asyncio.sleep(0.3)
            assert w.worker.keyspace is None
            assert r.pubsub_numsub(keys.keyspace_channel(0, Q))[0][1] == 0
            assert not [c for c in r.pubsub_channels() if c.startswith(b"__keyspace@")]
            assert r.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
            tid = go_enqueue(r, Q)  # still run, by polling
            await async_wait_for(lambda: tid in started, what="the polled task")

    try:
        asyncio.run(main())
    finally:
        r.close()


def test_a_user_without_config_gets_one_warning_and_tasks_still_run_by_polling(server, caplog):
    from fastq.connection import ACL_WORKER

    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "worker", "reset", "on", ">worker-pw", *ACL_WORKER.split())
    url = f"redis://worker:worker-pw@127.0.0.1:{server.port}/0"
    started: dict[str, float] = {}
    caplog.set_level(logging.WARNING, logger="fastq")

    async def main() -> None:
        async with RunningWorker(_handler(started), url, queues={Q: 1}, poll_interval=0.05,
                                 keyspace_wakeup=True) as w:
            await async_wait_for(lambda: w.worker.keyspace is not None and w.worker.keyspace.warned,
                                 what="the warning")
            tid = go_enqueue(admin, Q)
            await async_wait_for(lambda: tid in started, what="the polled task")
            assert admin.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
            assert admin.pubsub_numsub(keys.keyspace_channel(0, Q))[0][1] == 0

    try:
        asyncio.run(main())
    finally:
        admin.close()
    warnings = [rec.getMessage() for rec in caplog.records
                if rec.levelno == logging.WARNING and "keyspace wake-up" in rec.getMessage()]
    assert len(warnings) == 1, warnings
    assert "notify-keyspace-events" in warnings[0] and "polling" in warnings[0]
    assert keys.keyspace_channel(0, Q) in warnings[0]


def test_set_by_hand_for_an_acl_user_the_wakeup_works_after_the_warning(server, caplog, monkeypatch):
    """The documented fallback: an admin sets the flags and grants the keyspace channels."""
    from fastq.connection import ACL_WORKER

    monkeypatch.setattr("fastq.server.processor.POLL_MIN", POLL)
    admin = redis.Redis(port=server.port)
    admin.config_set("notify-keyspace-events", "Kl")
    admin.execute_command("ACL", "SETUSER", "worker", "reset", "on", ">worker-pw", *ACL_WORKER.split(),
                          "&__keyspace@0__:asynq:*")
    url = f"redis://worker:worker-pw@127.0.0.1:{server.port}/0"
    started: dict[str, float] = {}
    caplog.set_level(logging.WARNING, logger="fastq")

    async def main() -> None:
        async with RunningWorker(_handler(started), url, queues={Q: 1}, poll_interval=POLL,
                                 keyspace_wakeup=True) as w:
            empty = _count_empty_dequeues(w)
            await async_wait_for(lambda: w.worker.keyspace is not None and w.worker.keyspace.subscriptions,
                                 what="the subscription")
            assert w.worker.keyspace.warned  # CONFIG GET is refused: it cannot know
            assert await _pickup(admin, started, empty) < POLL / 2
            w.worker.processor.wake()

    try:
        asyncio.run(main())
    finally:
        admin.close()


def test_a_restarted_redis_gets_the_flags_again(tmp_path, monkeypatch):
    monkeypatch.setattr("fastq.server.processor.POLL_MIN", POLL)
    srv = RedisServer(tmp_path)
    srv.start()
    started: dict[str, float] = {}
    flags = "notify-keyspace-events"

    async def main() -> None:
        async with RunningWorker(_handler(started), srv.url, queues={Q: 1}, poll_interval=POLL,
                                 keyspace_wakeup=True) as w:
            empty = _count_empty_dequeues(w)
            with redis.Redis(port=srv.port) as r:
                await async_wait_for(lambda: r.pubsub_numsub(keys.keyspace_channel(0, Q))[0][1] == 1,
                                     what="the subscription")
            srv.stop()
            srv.start()  # same port, a fresh server: notify-keyspace-events is back to ""
            with redis.Redis(port=srv.port) as r:
                await async_wait_for(lambda: {"K", "l"} <= set(r.config_get(flags)[flags]), timeout=30,
                                     what="the flags set again")
                await async_wait_for(lambda: r.pubsub_numsub(keys.keyspace_channel(0, Q))[0][1] == 1,
                                     timeout=30, what="the subscription again")
                assert await _pickup(r, started, empty) < POLL / 2
            w.worker.processor.wake()

    try:
        asyncio.run(main())
    finally:
        srv.stop()


def test_the_flag_and_its_environment_variable_reach_the_worker_config(server, monkeypatch):
    import fastq.server.supervisor as supervisor
    from fastq.cli import supervisor as cli

    seen = []

    class Recorder:
        def __init__(self, handler, config, *args, **kwargs):
            seen.append(config)

        def run(self) -> int:
            return 0

    for name in [n for n in os.environ if n.startswith("FASTQ_") and n not in ("FASTQ_NO_EXTENSIONS", "FASTQ_DEBUG")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(supervisor, "Supervisor", Recorder)
    app = ["bench.pickup:mux", "--redis-url", server.url, "--log-level", "warning"]
    assert cli.main(app) == 0
    assert cli.main([*app, "--keyspace-wakeup"]) == 0
    monkeypatch.setenv("FASTQ_KEYSPACE_WAKEUP", "1")
    assert cli.main(app) == 0
    assert [c.keyspace_wakeup for c in seen] == [False, True, True]


def test_on_redis_cluster_it_warns_once_and_does_not_subscribe(caplog):
    from redis.asyncio.cluster import RedisCluster

    from fastq.server.keyspace import KeyspaceWakeup

    async def main() -> bool:
        client = RedisCluster(host="127.0.0.1", port=free_port())  # never connected: nothing is sent
        return await KeyspaceWakeup(client, object(), [Q], 1.0).configure()  # type: ignore[arg-type]

    caplog.set_level(logging.WARNING, logger="fastq")
    assert asyncio.run(main()) is False
    assert [r.getMessage() for r in caplog.records if "Cluster" in r.getMessage()] != []
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
