"""Client and AsyncClient write exactly what Go Asynq's client writes."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import redis
from helpers import assert_golden_state

import fastq
from fastq import keys
from fastq._codec import decode_message

PAYLOAD = b'{"user_id":42}'


@pytest.fixture
def client(redis_url):
    c = fastq.Client(redis_url)
    yield c
    c.close()


def test_pending_matches_go(client, r):
    info = client.enqueue(fastq.Task("email:deliver", PAYLOAD), task_id="st-pending", max_retry=3)
    assert (info.id, info.queue, info.state) == ("st-pending", "default", fastq.TaskState.PENDING)
    assert_golden_state(r, "pending")


def test_custom_queue_matches_go(client, r):
    client.enqueue(fastq.Task("report:build", b"abc"), task_id="st-critical", queue="critical")
    assert_golden_state(r, "pending_custom_queue")


def test_unique_matches_go(client, r):
    client.enqueue(fastq.Task("email:deliver", PAYLOAD), task_id="st-unique", unique=timedelta(hours=1))
    assert_golden_state(r, "pending_unique")
    ttl = r.pttl(keys.unique_key("default", "email:deliver", PAYLOAD))
    assert 3_590_000 < ttl <= 3_600_000


def test_scheduled_matches_go(client, r):
    at = datetime.fromtimestamp(2000000000, timezone.utc)
    info = client.enqueue(fastq.Task("report:build", b"abc"), task_id="st-sched", process_at=at)
    assert info.state == fastq.TaskState.SCHEDULED and info.next_process_at == at
    assert_golden_state(r, "scheduled")
    assert r.zscore("asynq:{default}:scheduled", "st-sched") == 2000000000


def test_scheduled_unique_matches_go(client, r):
    client.enqueue(fastq.Task("email:deliver", PAYLOAD), task_id="st-sched-uniq",
                   process_in=timedelta(hours=1), unique=timedelta(hours=1))
    assert_golden_state(r, "scheduled_unique")
    ttl = r.pttl(keys.unique_key("default", "email:deliver", PAYLOAD))
    assert 7_180_000 <= ttl <= 7_200_000


def test_aggregating_matches_go(client, r):
    client.enqueue(fastq.Task("batch:item", b"item1"), task_id="st-group-1", group="g1")
    info = client.enqueue(fastq.Task("batch:item", b"item2"), task_id="st-group-2", group="g1")
    assert info.state == fastq.TaskState.AGGREGATING
    assert_golden_state(r, "aggregating")


def test_id_conflict(client, r):
    client.enqueue(fastq.Task("t"), task_id="same")
    with pytest.raises(fastq.TaskIDConflictError, match="same") as err:
        client.enqueue(fastq.Task("other"), task_id="same")
    assert err.value.ids == ["same"]
    assert r.llen("asynq:{default}:pending") == 1
    assert decode_message(r.hget("asynq:{default}:t:same", "msg")).type == "t"


def test_id_conflict_with_scheduled_and_group(client):
    client.enqueue(fastq.Task("t"), task_id="x", process_in=60)
    with pytest.raises(fastq.TaskIDConflictError):
        client.enqueue(fastq.Task("t"), task_id="x", process_in=60)
    with pytest.raises(fastq.TaskIDConflictError):
        client.enqueue(fastq.Task("t"), task_id="x", group="g")


def test_duplicate_unique_task(client, r):
    client.enqueue(fastq.Task("u", b"p"), unique=60)
    with pytest.raises(fastq.DuplicateTaskError):
        client.enqueue(fastq.Task("u", b"p"), unique=60)
    client.enqueue(fastq.Task("u", b"other"), unique=60)  # different payload: different lock
    assert r.llen("asynq:{default}:pending") == 2


def test_unique_lock_released_on_id_conflict(client, r):
    """Go leaks the lock when the ID conflicts; fastq releases it (documented choice)."""
    client.enqueue(fastq.Task("a"), task_id="id1")
    with pytest.raises(fastq.TaskIDConflictError):
        client.enqueue(fastq.Task("u", b"p"), task_id="id1", unique=60)
    assert not r.exists(keys.unique_key("default", "u", b"p"))


def test_queue_is_registered_once_per_client(client, r, monkeypatch):
    calls = []
    original = client.redis.sadd
    monkeypatch.setattr(client.redis, "sadd", lambda *a: calls.append(a) or original(*a))
    for _ in range(3):
        client.enqueue(fastq.Task("t"), queue="q1")
    assert calls == [(keys.ALL_QUEUES, "q1")]
    assert r.smembers(keys.ALL_QUEUES) == {b"q1"}


def test_enqueue_many_writes_every_task(client, r):
    infos = client.enqueue_many([fastq.Task("noop", b"%d" % i) for i in range(2500)], queue="bulk", max_retry=2)
    assert len(infos) == 2500 and len({i.id for i in infos}) == 2500
    assert all(i.state == fastq.TaskState.PENDING and i.queue == "bulk" for i in infos)
    pending = [x.decode() for x in r.lrange("asynq:{bulk}:pending", 0, -1)]
    assert pending[::-1] == [i.id for i in infos]  # LPUSH order: first enqueued is dequeued first
    msg = decode_message(r.hget(keys.task_key("bulk", infos[1234].id), "msg"))
    assert (msg.type, msg.payload, msg.retry, msg.timeout) == ("noop", b"1234", 2, 1800)
    fields = r.hgetall(keys.task_key("bulk", infos[0].id))
    assert set(fields) == {b"msg", b"state", b"pending_since"} and fields[b"state"] == b"pending"


def _evalsha_calls(r) -> int:
    return r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


@pytest.mark.parametrize("flush_scripts", [False, True])
def test_enqueue_many_makes_one_script_call_per_chunk(redis_url, r, flush_scripts):
    client = fastq.Client(redis_url, chunk_size=100)
    client.enqueue_many([fastq.Task("warm-up")])  # loads the script (the fixture flushed them)
    if flush_scripts:
        r.script_flush()
    r.config_resetstat()
    client.enqueue_many([fastq.Task("noop")] * 1000)
    # counted by Redis; a flushed script costs the first call and the one in flight behind it
    assert _evalsha_calls(r) == (12 if flush_scripts else 10)
    assert r.llen("asynq:{default}:pending") == 1001


def test_enqueue_many_scheduled(client, r):
    infos = client.enqueue_many([fastq.Task("later")] * 5, process_in=3600)
    assert all(i.state == fastq.TaskState.SCHEDULED for i in infos)
    assert r.zcard("asynq:{default}:scheduled") == 5


def test_enqueue_many_unique_reports_duplicates(client, r):
    client.enqueue(fastq.Task("u", b"1"), unique=60)
    tasks = [fastq.Task("u", b"1"), fastq.Task("u", b"2"), fastq.Task("u", b"3")]
    with pytest.raises(fastq.DuplicateTaskError) as err:
        client.enqueue_many(tasks, unique=60)
    assert len(err.value.enqueued) == 2
    assert r.llen("asynq:{default}:pending") == 3


def test_enqueue_many_groups(client, r):
    client.enqueue_many([fastq.Task("g", b"%d" % i) for i in range(3)], group="grp")
    assert r.zcard("asynq:{default}:g:grp") == 3
    assert r.smembers("asynq:{default}:groups") == {b"grp"}


def test_enqueue_many_rejects_shared_task_id(client):
    with pytest.raises(TypeError, match="task_id"):
        client.enqueue_many([fastq.Task("a"), fastq.Task("b")], task_id="x")


def test_enqueue_many_empty(client, r):
    assert client.enqueue_many([]) == []
    assert r.dbsize() == 0


def test_enqueue_many_reports_conflicts_and_writes_the_rest(client, r):
    client.enqueue(fastq.Task("t"), task_id="taken")
    plans = [fastq.Task("t")]
    with pytest.raises(fastq.TaskIDConflictError) as err:
        client.enqueue_many(plans, task_id="taken")
    assert err.value.ids == ["taken"] and err.value.enqueued == []


def test_bad_input_writes_nothing(client, r):
    with pytest.raises(TypeError):
        client.enqueue(fastq.Task("t"), bogus=1)
    with pytest.raises(fastq.InvalidOptionError):
        client.enqueue(fastq.Task("t"), queue=" ")
    with pytest.raises(TypeError):
        client.enqueue("not a task")
    assert r.dbsize() == 0


def test_survives_script_flush(client, r):
    client.enqueue(fastq.Task("t"))
    r.script_flush()
    client.enqueue(fastq.Task("t"))
    r.script_flush()
    client.enqueue_many([fastq.Task("t")] * 3)
    r.script_flush()
    client.enqueue_many([fastq.Task("u", b"%d" % i) for i in range(3)], unique=60)
    assert r.llen("asynq:{default}:pending") == 8


def test_rejects_decoding_redis_client(redis_url):
    with pytest.raises(ValueError, match="decode_responses"):
        fastq.Client(redis.Redis.from_url(redis_url, decode_responses=True))


def test_bad_url_is_reported_without_password():
    with pytest.raises(ValueError) as err:
        fastq.Client("http://user:secret@host/0")
    assert "secret" not in str(err.value)


def test_async_client_matches_sync(redis_url, r):
    async def main():
        async with fastq.AsyncClient(redis_url) as client:
            info = await client.enqueue(fastq.Task("email:deliver", PAYLOAD), task_id="st-pending", max_retry=3)
            assert info.state == fastq.TaskState.PENDING
            with pytest.raises(fastq.TaskIDConflictError):
                await client.enqueue(fastq.Task("email:deliver", PAYLOAD), task_id="st-pending")
            return await client.enqueue_many([fastq.Task("n")] * 10, queue="other")

    infos = asyncio.run(main())
    assert len(infos) == 10
    r.delete("asynq:{other}:pending", *[keys.task_key("other", i.id) for i in infos])
    r.srem(keys.ALL_QUEUES, "other")
    assert_golden_state(r, "pending")


def test_async_client_unique_and_groups(redis_url, r):
    async def main():
        async with fastq.AsyncClient(redis_url) as client:
            await client.enqueue(fastq.Task("u"), unique=60)
            with pytest.raises(fastq.DuplicateTaskError):
                await client.enqueue(fastq.Task("u"), unique=60)
            await r_flush()
            await client.enqueue_many([fastq.Task("g", b"1"), fastq.Task("g", b"2")], group="x")

    async def r_flush():
        r.script_flush()

    asyncio.run(main())
    assert r.zcard("asynq:{default}:g:x") == 2


def test_payload_over_the_limit_is_refused(redis_url, r):
    client = fastq.Client(redis_url, max_payload_bytes=1000)
    with pytest.raises(fastq.errors.PayloadTooLargeError, match="1001 bytes"):
        client.enqueue(fastq.Task("big", b"x" * 1001))
    with pytest.raises(ValueError):
        client.enqueue_many([fastq.Task("ok"), fastq.Task("big", b"x" * 5000)])
    assert r.dbsize() == 0
    client.enqueue(fastq.Task("edge", b"x" * 1000))
    unlimited = fastq.Client(redis_url, max_payload_bytes=0)
    unlimited.enqueue(fastq.Task("huge", b"x" * 2_000_000))
    assert r.llen("asynq:{default}:pending") == 2
    with pytest.raises(ValueError):
        fastq.Client(redis_url, max_payload_bytes=-1)


def test_default_payload_limit_is_one_mebibyte(client):
    client.enqueue(fastq.Task("mb", b"x" * 1_000_000))
    with pytest.raises(fastq.errors.PayloadTooLargeError):
        client.enqueue(fastq.Task("too-big", b"x" * (1024 * 1024 + 1)))


def test_hiredis_packing_is_byte_identical_to_redis_py():
    from redis.asyncio.connection import Connection

    from fastq.redis.facade import fast_connection_class

    fast = fast_connection_class()
    assert fast is not None
    args = ("EVALSHA", "a" * 40, 2, "asynq:{q}:t:ü", b"\x00\xffbytes", 12, 1.5, "")
    assert b"".join(fast().pack_command(*args)) == b"".join(Connection().pack_command(*args))
    assert fast().pack_command("CLIENT SETNAME", "x") == Connection().pack_command("CLIENT SETNAME", "x")
    assert b"".join(fast().pack_command("SET", "k", memoryview(b"v"))) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"


def test_async_client_uses_hiredis_packing(redis_url):
    from fastq.redis.facade import fast_connection_class

    async def main():
        async with fastq.AsyncClient(redis_url) as client:
            assert client.redis.connection_pool.connection_class is fast_connection_class()
            await client.enqueue(fastq.Task("t"))

    asyncio.run(main())
