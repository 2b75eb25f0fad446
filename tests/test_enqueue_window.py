"""enqueue_many keeps one chunk in flight while it builds the next (fastq._rdb.window).

Each test checks what Redis holds afterwards: every task once, in the order given, whatever
happened to the script cache or the connection on the way.
"""
from __future__ import annotations

import asyncio
import gc
import sys
import threading
from pathlib import Path

import pytest
import redis
import redis.asyncio

import fastq
from fastq._rdb import window as _window
from fastq.errors import PayloadTooLargeError

sys.path.insert(0, str(Path(__file__).resolve().parent / "faults"))
from proxy import Proxy  # noqa: E402

PENDING = "asynq:{default}:pending"


def tasks(n: int) -> list[fastq.Task]:
    return [fastq.Task("noop", b"%d" % i) for i in range(n)]


def pending_ids(r: redis.Redis) -> list[str]:
    return [x.decode() for x in reversed(r.lrange(PENDING, 0, -1))]  # LPUSH: oldest last


def enqueue_many(url_or_client, items, sync: bool, **kw):
    if sync:
        return fastq.Client(url_or_client, **kw).enqueue_many(items)

    async def go():
        async with fastq.AsyncClient(url_or_client, **kw) as client:
            return await client.enqueue_many(items)
    return asyncio.run(go())


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("flush_scripts", [False, True], ids=["loaded", "flushed"])
def test_every_task_once_in_order(redis_url, r, sync, flush_scripts):
    fastq.Client(redis_url).enqueue(fastq.Task("first"))  # loads the script, registers the queue
    if flush_scripts:  # every call in flight is refused with NOSCRIPT until one reloads it
        r.script_flush()
    infos = enqueue_many(redis_url, tasks(1050), sync, chunk_size=100)
    assert [i.payload for i in infos] == [b"%d" % i for i in range(1050)]
    assert pending_ids(r)[1:] == [i.id for i in infos]


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_a_plain_client_takes_the_window_and_a_wrapped_one_does_not(redis_url, sync):
    if sync:
        assert _window.window_pool(redis.Redis.from_url(redis_url)) is not None
        durable = fastq.Client(redis_url + "?durability=replicated").redis
        assert _window.window_pool(durable) is None
    else:
        assert _window.window_pool(redis.asyncio.Redis.from_url(redis_url)) is not None
        durable = fastq.AsyncClient(redis_url + "?durability=replicated").redis
        assert _window.window_pool(durable) is None


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_lost_replies_are_sent_again_without_duplicates_or_conflicts(redis_server, r, sync):
    """Redis runs the chunks but their replies never arrive: the window times out, sends
    those chunks again through the client, and counts "already exists" as written."""
    proxy = Proxy(redis_server.port)
    kw = dict(host="127.0.0.1", port=proxy.port, socket_timeout=1.0)

    def lose_replies_for_a_while() -> None:
        r.config_resetstat()
        proxy.mode = "drop-replies"
        threading.Timer(0.3, setattr, (proxy, "mode", "pass")).start()  # before the 1 s timeout

    async def run_async() -> list:
        async with fastq.AsyncClient(redis.asyncio.Redis(**kw), chunk_size=100) as client:
            await client.enqueue_many([fastq.Task("first")] * 2)  # batch script loaded, queue registered
            lose_replies_for_a_while()
            return await client.enqueue_many(tasks(300))

    try:
        if sync:
            with fastq.Client(redis.Redis(**kw), chunk_size=100) as client:
                client.enqueue_many([fastq.Task("first")] * 2)
                lose_replies_for_a_while()
                infos = client.enqueue_many(tasks(300))
        else:
            infos = asyncio.run(run_async())
    finally:
        proxy.close()
    assert len(infos) == 300
    assert pending_ids(r)[2:] == [i.id for i in infos]
    # chunk 1 and 2 ran while their replies were dropped, then ran again (finding their tasks)
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 5


def test_redis_down_raises_connection_error(tmp_path):
    from helpers import free_port
    with pytest.raises(redis.ConnectionError):
        fastq.Client(f"redis://127.0.0.1:{free_port()}/0").enqueue_many(tasks(2500))


def test_the_garbage_collector_is_paused_only_during_large_calls(redis_url, monkeypatch):
    seen = []
    original = _window.window
    monkeypatch.setattr("fastq.client.window", lambda *a: seen.append(gc.isenabled()) or original(*a))
    client = fastq.Client(redis_url, chunk_size=10)
    client.enqueue_many(tasks(11))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(PayloadTooLargeError):
        fastq.Client(redis_url, chunk_size=10, max_payload_bytes=1).enqueue_many(tasks(20))
    assert gc.isenabled()
    gc.disable()
    try:
        client.enqueue_many(tasks(11))
        assert not gc.isenabled()  # a caller's choice stays
    finally:
        gc.enable()
