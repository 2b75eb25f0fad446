"""fastq._rdb.settled: waiters learn a task's final state from the settle scripts' notice.

Each test runs the real scripts on the session's redis-server: a worker (fastq.testing's
WorkerHarness) settles the tasks, and the waiters must wake from the notice, not by polling.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis

import fastq
from fastq import keys
from fastq._rdb.settled import Settled, SettledWatch, close_all, watch_for
from fastq.errors import SkipRetry
from fastq.testing import WorkerHarness


def _mux() -> fastq.ServeMux:
    mux = fastq.ServeMux()

    @mux.handle("ok")
    async def ok(task: fastq.Task) -> bytes:
        return b"result:" + task.payload

    @mux.handle("slow")
    async def slow(task: fastq.Task) -> bytes:
        await asyncio.sleep(0.3)
        return b"slow"

    @mux.handle("bad")
    def bad(task: fastq.Task) -> None:
        raise SkipRetry("it broke")

    @mux.handle("plain")
    def plain(task: fastq.Task) -> None:
        return None

    return mux


def _subscribers(r: redis.Redis, queue: str = "default") -> int:
    return int(dict(r.pubsub_numsub(keys.settled_channel(queue)))[keys.settled_channel(queue).encode()])


def test_a_waiter_started_before_the_task_runs_is_woken_with_its_result(redis_url, r):
    client = fastq.Client(redis_url)
    q = f"early-{uuid.uuid4().hex[:8]}"  # watches of other tests may still listen on "default"
    info = client.enqueue(fastq.Task("ok", b"1"), queue=q, retention=60)
    watch = SettledWatch(redis.Redis.from_url(redis_url))
    got: list[Settled] = []
    waiter = threading.Thread(target=lambda: got.append(watch.wait(q, info.id, 10)))
    waiter.start()
    deadline = time.monotonic() + 5
    while _subscribers(r, q) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _subscribers(r, q) == 1
    WorkerHarness(_mux(), redis_url, queues={q: 1}).drain(q)
    waiter.join(10)
    assert got == [Settled("completed", b"result:1")]


def test_a_task_settled_before_the_wait_is_read_from_its_hash(redis_url, r):
    client = fastq.Client(redis_url)
    kept = client.enqueue(fastq.Task("ok", b"2"), retention=60)
    failed = client.enqueue(fastq.Task("bad"))
    gone = client.enqueue(fastq.Task("plain"))
    WorkerHarness(_mux(), redis_url).drain()
    watch = SettledWatch(redis.Redis.from_url(redis_url))
    assert watch.wait("default", kept.id, 5) == Settled("completed", b"result:2")
    archived = watch.wait("default", failed.id, 5)
    assert archived.state == "archived" and "it broke" in archived.error
    assert watch.wait("default", gone.id, 5) == Settled("done")


def test_the_notice_wakes_waiters_of_done_archived_and_completed_tasks(redis_url, r):
    client = fastq.Client(redis_url)
    infos = [client.enqueue(fastq.Task("slow"), retention=60), client.enqueue(fastq.Task("bad")),
             client.enqueue(fastq.Task("plain"))]
    watch = SettledWatch(redis.Redis.from_url(redis_url))
    results: dict[str, Settled] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i.id, watch.wait("default", i.id, 10)))
               for i in infos]
    for t in threads:
        t.start()
    monitor = r.pubsub()
    monitor.subscribe(keys.settled_channel("default"))
    WorkerHarness(_mux(), redis_url).drain()
    for t in threads:
        t.join(10)
    assert results[infos[0].id] == Settled("completed", b"slow")
    assert results[infos[1].id].state == "archived"
    assert results[infos[2].id] == Settled("done")
    notices = []
    while (m := monitor.get_message(timeout=0.5)) is not None:
        if m["type"] == "message":
            notices.append(m["data"].split(b"\n")[0])
    assert sorted(notices) == [b"archived", b"completed", b"done"]  # one notice per settle call
    monitor.close()


def test_asyncio_waiters_share_one_subscription_and_time_out_cleanly(redis_url, r):
    client = fastq.Client(redis_url)
    q = f"shared-{uuid.uuid4().hex[:8]}"  # watches of other tests may still listen on "default"
    infos = [client.enqueue(fastq.Task("ok", str(i).encode()), queue=q, retention=60) for i in range(50)]
    never = client.enqueue(fastq.Task("ok", b"x"), queue=q + "-never", retention=60)
    watch = watch_for(redis.Redis.from_url(redis_url))
    assert watch is watch_for(redis.Redis.from_url(redis_url))  # one per server and process

    async def main() -> list[Settled]:
        waits = [asyncio.ensure_future(watch.await_(q, i.id, 10)) for i in infos]
        with pytest.raises(TimeoutError, match=never.id):
            await watch.await_(q + "-never", never.id, 0.3)
        await asyncio.to_thread(WorkerHarness(_mux(), redis_url, queues={q: 1}).drain, q)
        return await asyncio.gather(*waits)

    results = asyncio.run(main())
    assert [s.result for s in results] == [f"result:{i}".encode() for i in range(50)]
    assert _subscribers(r, q) == 1 and _subscribers(r, q + "-never") == 1


def test_the_watch_reconnects_and_reads_again_after_redis_drops_it(redis_url, r):
    client = fastq.Client(redis_url)
    info = client.enqueue(fastq.Task("ok", b"3"), retention=60)
    watch = SettledWatch(redis.Redis.from_url(redis_url))
    got: list[Settled] = []
    waiter = threading.Thread(target=lambda: got.append(watch.wait("default", info.id, 15)))
    waiter.start()
    deadline = time.monotonic() + 5
    while _subscribers(r) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    r.client_kill_filter(_type="pubsub")  # the notice of what follows is lost with the connection
    WorkerHarness(_mux(), redis_url).drain()
    waiter.join(15)
    assert got == [Settled("completed", b"result:3")]
    watch.close()


def test_close_stops_the_thread_and_a_new_watch_takes_over(redis_url, r):
    first = watch_for(redis.Redis.from_url(redis_url))
    info = fastq.Client(redis_url).enqueue(fastq.Task("ok", b"4"), retention=60)
    WorkerHarness(_mux(), redis_url).drain()
    assert first.wait("default", info.id, 5) == Settled("completed", b"result:4")
    thread = first._thread
    assert thread is not None and thread.is_alive()
    close_all()
    assert not thread.is_alive()
    second = watch_for(redis.Redis.from_url(redis_url))
    assert second is not first and second.wait("default", info.id, 5) == Settled("completed", b"result:4")
    second.close()  # a closed watch leaves the registry: the next caller gets a working one
    with pytest.raises(RuntimeError, match="closed"):
        second.wait("default", info.id, 1)
    third = watch_for(redis.Redis.from_url(redis_url))
    assert third is not second and third.wait("default", info.id, 5) == Settled("completed", b"result:4")


def test_anything_published_on_the_channel_leaves_the_watch_working(redis_url, r):
    q = f"noise-{uuid.uuid4().hex[:8]}"
    client = fastq.Client(redis_url)
    info = client.enqueue(fastq.Task("ok", b"5"), queue=q, retention=60)
    watch = SettledWatch(redis.Redis.from_url(redis_url))
    got: list[Settled] = []
    waiter = threading.Thread(target=lambda: got.append(watch.wait(q, info.id, 15)))
    waiter.start()
    deadline = time.monotonic() + 5
    while _subscribers(r, q) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    channel = keys.settled_channel(q)
    for junk in (b"\xff\xfe", b"", b"done", b"done\n" + info.id.encode(), b"done\n\xff" + info.id.encode(),
                 b"completed\n" + info.id.encode(), b"\n\n\n", b"weird-state\n" + info.id.encode()):
        r.publish(channel, junk)  # anyone may publish: none of it may stop or mislead the watch
    time.sleep(0.2)
    assert got == [] and waiter.is_alive()  # a notice for a task that is not final yet is checked, not believed
    WorkerHarness(_mux(), redis_url, queues={q: 1}).drain(q)
    waiter.join(15)
    assert got == [Settled("completed", b"result:5")]
    watch.close()
