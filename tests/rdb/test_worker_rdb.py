"""fastq._rdb.worker against a real Redis: each operation of the worker's seam, key by key.

Each test works on its own queues (``q``/``q2`` fixtures) and deletes their keys afterwards.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio

from fastq import keys
from fastq._codec import TaskMessage, decode_message, encode_message
from fastq._rdb.outcome import Archive, Claim, Complete, Done, Requeue, Retry
from fastq._rdb.worker import LEASE_MARGIN, Broker, SyncBroker, dequeue_keys, utc_date


def drop(r: redis.Redis, queue: str) -> None:
    found = list(r.scan_iter(match=f"asynq:{{{queue}}}:*"))
    if found:
        r.delete(*found)


def _queue(r: redis.Redis):
    name = f"rdb-worker-{uuid.uuid4().hex[:8]}"
    yield name
    drop(r, name)


q = pytest.fixture(_queue)
q2 = pytest.fixture(_queue)


def run(redis_url: str, fn: Any, cluster: bool = False) -> Any:
    """``await fn(broker)`` with a Broker on a fresh redis.asyncio client (``cluster``: force the
    one-call-per-queue path of Redis Cluster)."""
    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            broker = Broker(client)
            broker.cluster = cluster
            return await fn(broker)
        finally:
            await client.aclose()

    return asyncio.run(main())


def msg(tid: str, q: str, **kw: Any) -> TaskMessage:
    return TaskMessage(type="t", id=tid, queue=q, retry=3, timeout=1800, **kw)


def seed_pending(r: redis.Redis, q: str, *ids: str) -> None:
    for tid in ids:
        r.hset(keys.task_key(q, tid), mapping={"msg": encode_message(msg(tid, q)), "state": "pending"})
        r.lpush(keys.pending_key(q), tid)


def seed_active(r: redis.Redis, q: str, *ids: str, token: str = "tok", lease_in: int = 30, **kw: Any) -> None:
    now = r.time()[0]
    for tid in ids:
        r.hset(keys.task_key(q, tid), mapping={"msg": encode_message(msg(tid, q, **kw)), "state": "active",
                                               "lease_token": token})
        r.lpush(keys.active_key(q), tid)
        r.zadd(keys.lease_key(q), {tid: now + lease_in})


# ------------------------------------------------------------------ dequeue

@pytest.mark.parametrize("cluster", [False, True], ids=["one-call", "call-per-queue"])
def test_dequeue_claims_a_batch_from_the_first_ready_queue(redis_url, r, q, q2, cluster):
    seed_pending(r, q, "p1")
    r.set(keys.paused_key(q), 1)  # paused: skipped
    seed_pending(r, q2, "a", "b", "c")
    before = time.monotonic()
    claims = run(redis_url, lambda b: b.dequeue([q, q2], 2, 30, "srv:1"), cluster)
    after = time.monotonic()
    assert [(c.queue, c.raw_id, c.token) for c in claims] == [(q2, b"a", "srv:1"), (q2, b"b", "srv:1")]
    assert [decode_message(c.raw).id for c in claims] == ["a", "b"]
    for c in claims:  # certainly valid from the call's start for lease - margin seconds
        assert before + 30 - LEASE_MARGIN <= c.lease_until <= after + 30 - LEASE_MARGIN
    assert r.lrange(keys.active_key(q2), 0, -1) == [b"b", b"a"]
    assert r.hget(keys.task_key(q2, "a"), "lease_token") == b"srv:1"
    assert r.llen(keys.pending_key(q)) == 1


@pytest.mark.parametrize("cluster", [False, True], ids=["one-call", "call-per-queue"])
def test_dequeue_follows_the_order_given_and_returns_nothing_when_empty(redis_url, r, q, q2, cluster):
    seed_pending(r, q, "x")
    seed_pending(r, q2, "y")
    first = run(redis_url, lambda b: b.dequeue([q2, q], 5, 30, "t"), cluster)
    assert [(c.queue, c.raw_id) for c in first] == [(q2, b"y")]
    second = run(redis_url, lambda b: b.dequeue([q2, q], 5, 30, "t"), cluster)
    assert [(c.queue, c.raw_id) for c in second] == [(q, b"x")]
    assert run(redis_url, lambda b: b.dequeue([q2, q], 5, 30, "t"), cluster) == []


def test_dequeue_hands_out_a_missing_message_as_none(redis_url, r, q):
    r.lpush(keys.pending_key(q), "ghost")
    (claim,) = run(redis_url, lambda b: b.dequeue([q], 5, 30, "t"))
    assert claim.raw_id == b"ghost" and claim.raw is None


def test_dequeue_layout_is_cached_per_order(redis_url, r, q, q2):
    async def twice(b: Broker) -> Any:
        await b.dequeue([q, q2], 1, 30, "t")
        await b.dequeue([q2, q], 1, 30, "t")
        await b.dequeue([q, q2], 1, 30, "t")
        return b._layouts

    layouts = run(redis_url, twice)
    assert set(layouts) == {(q, q2), (q2, q)}
    assert layouts[(q, q2)] == ([*dequeue_keys(q), *dequeue_keys(q2)], [keys.task_key_prefix(q),
                                                                        keys.task_key_prefix(q2)])
    assert dequeue_keys(q) == [keys.pending_key(q), keys.paused_key(q), keys.active_key(q), keys.lease_key(q),
                              keys.flow_links_key(q)]


def test_dequeue_wrongtype_raises_and_key_types_name_the_culprit(redis_url, r, q, q2):
    seed_pending(r, q2, "a")
    r.set(keys.pending_key(q), "not a list")

    async def check(b: Broker) -> Any:
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await b.dequeue([q, q2], 5, 30, "t")
        return await b.key_types(q), await b.wrong_key_types(q), await b.wrong_key_types(q2)

    types, wrong, fine = run(redis_url, check)
    assert types == {keys.pending_key(q): "string", keys.paused_key(q): "none", keys.active_key(q): "none",
                     keys.lease_key(q): "none", keys.flow_links_key(q): "none"}
    assert wrong == [(keys.pending_key(q), "string", "list")]
    assert fine == []


# ------------------------------------------------------------------ settle

def test_settle_writes_each_kind_and_returns_the_missing(redis_url, r, q):
    seed_active(r, q, "d", "c", "f", "x", "rq")
    r.set(f"asynq:{{{q}}}:unique:k", "d")
    now = time.time()
    done = msg("c", q, retention=60, completed_at=int(now))
    failed = msg("f", q, retried=1, error_msg="boom")
    outcomes = [Done(q, "d", "tok", f"asynq:{{{q}}}:unique:k"), Complete(q, "c", "tok", int(now) + 60, done, "", b"r"),
                Retry(q, "f", "tok", failed, int(now) + 100, True), Archive(q, "x", "tok", msg("x", q, error_msg="e")),
                Requeue(q, "rq", "tok"), Done(q, "gone", "tok"), Done(q, "stolen", "someone-else")]
    seed_active(r, q, "stolen", token="new-owner")
    missing = run(redis_url, lambda b: b.settle(outcomes, now))
    assert sorted(missing) == [b"gone", b"stolen"]
    assert not r.exists(keys.task_key(q, "d")) and not r.exists(f"asynq:{{{q}}}:unique:k")
    assert r.hget(keys.task_key(q, "c"), "result") == b"r" and r.zscore(keys.completed_key(q), "c") == int(now) + 60
    assert r.zscore(keys.retry_key(q), "f") == int(now) + 100
    assert decode_message(r.hget(keys.task_key(q, "f"), "msg")).error_msg == "boom"
    assert r.zscore(keys.archived_key(q), "x") == int(now)
    assert r.lrange(keys.pending_key(q), 0, -1) == [b"rq"]
    assert r.lrange(keys.active_key(q), 0, -1) == [b"stolen"]
    date = utc_date(now)
    assert r.get(keys.processed_key(q, date)) == b"4" and r.get(keys.failed_key(q, date)) == b"2"


def test_settle_archives_already_encoded_bytes_and_non_utf8_ids(redis_url, r, q):
    bad = b"\xff\xfe"
    task_key = keys.task_key_prefix(q).encode() + bad
    r.hset(task_key, mapping={"msg": b"junk", "state": "active", "lease_token": "tok"})
    r.lpush(keys.active_key(q), bad)
    r.zadd(keys.lease_key(q), {bad: r.time()[0] + 30})
    encoded = encode_message(TaskMessage(type="fastq:undecodable", id="\\xff\\xfe", queue=q, payload=b"junk"))
    assert run(redis_url, lambda b: b.settle([Archive(q, bad, "tok", encoded)])) == []
    assert r.zrange(keys.archived_key(q), 0, -1) == [bad]
    assert r.hget(task_key, "msg") == encoded and r.hget(task_key, "state") == b"archived"


def test_settle_with_a_cutoff_spares_a_lease_extended_since(redis_url, r, q):
    seed_active(r, q, "expired", "extended")
    now = r.time()[0]
    r.zadd(keys.lease_key(q), {"expired": now - 10, "extended": now + 8})
    outcomes = [Retry(q, tid, "", msg(tid, q, retried=1), now, True) for tid in ("expired", "extended")]
    assert run(redis_url, lambda b: b.settle(outcomes, cutoff=str(now - 5))) == [b"extended"]
    assert r.hget(keys.task_key(q, "expired"), "state") == b"retry"
    assert r.hget(keys.task_key(q, "extended"), "state") == b"active"


def test_settle_of_nothing_makes_no_call(redis_url):
    class NoClient:  # any call would fail
        pass

    async def main() -> list[bytes]:
        return await Broker(NoClient()).settle([])

    assert asyncio.run(main()) == []
    assert SyncBroker(NoClient()).settle([]) == []


# ------------------------------------------------------------------ upkeep

def test_forward_moves_due_tasks_in_batches(redis_url, r, q):
    now = int(time.time())
    for i in range(25):
        r.hset(keys.task_key(q, f"s{i}"), mapping={"msg": encode_message(msg(f"s{i}", q)), "state": "retry"})
        r.zadd(keys.retry_key(q), {f"s{i}": now - 5})
    r.hset(keys.task_key(q, "later"), mapping={"msg": encode_message(msg("later", q)), "state": "scheduled"})
    r.zadd(keys.scheduled_key(q), {"later": now + 100})
    assert run(redis_url, lambda b: b.forward([q], batch=10)) == 25
    assert r.llen(keys.pending_key(q)) == 25 and r.zcard(keys.retry_key(q)) == 0
    assert r.zrange(keys.scheduled_key(q), 0, -1) == [b"later"]


def test_janitor_deletes_expired_completed_tasks_batch_after_batch(redis_url, r, q):
    now = r.time()[0]
    for i in range(7):
        r.hset(keys.task_key(q, f"c{i}"), mapping={"msg": encode_message(msg(f"c{i}", q)), "state": "completed"})
        r.zadd(keys.completed_key(q), {f"c{i}": now - 1})
    r.hset(keys.task_key(q, "kept"), mapping={"msg": encode_message(msg("kept", q)), "state": "completed"})
    r.zadd(keys.completed_key(q), {"kept": now + 100})
    assert run(redis_url, lambda b: b.janitor([q], batch=3)) == 7
    assert r.zrange(keys.completed_key(q), 0, -1) == [b"kept"]
    assert not any(r.exists(keys.task_key(q, f"c{i}")) for i in range(7))


def test_list_lease_expired_gives_the_cutoff_and_tokenless_claims(redis_url, r, q):
    seed_active(r, q, "old", "fresh")
    now = r.time()[0]
    r.zadd(keys.lease_key(q), {"old": now - 100, "fresh": now + 30, "nohash": now - 100})
    cutoff, claims = run(redis_url, lambda b: b.list_lease_expired(q, 10, 100))
    assert abs(int(cutoff) - (now - 10)) <= 1
    by_id = {c.raw_id: c for c in claims}
    assert set(by_id) == {b"old", b"nohash"}
    assert by_id[b"nohash"].raw is None and decode_message(by_id[b"old"].raw).id == "old"
    assert all(c.token == "" and c.queue == q for c in claims)
    assert run(redis_url, lambda b: b.list_lease_expired(q, 200, 100))[1] == []


def test_list_claims_finds_one_workers_claims_sync_and_async(redis_url, r, q, q2):
    seed_active(r, q, "mine1", token="dead:1")
    seed_active(r, q2, "mine2", token="dead:7")
    seed_active(r, q, "other", token="alive:1")
    r.hdel(keys.task_key(q2, "mine2"), "msg")
    r.hset(keys.flow_links_key(q), "mine1", b'{"k":"chain"}')
    expected = [Claim(q, b"mine1", encode_message(msg("mine1", q)), "dead:1", link=b'{"k":"chain"}'),
                Claim(q2, b"mine2", None, "dead:7")]
    assert run(redis_url, lambda b: b.list_claims([q, q2], "dead")) == expected
    client = redis.Redis.from_url(redis_url)
    try:
        sync = SyncBroker(client)
        assert sync.list_claims([q, q2], "dead") == expected
        # and the supervisor's settle on the sync client: token-checked as the async one
        assert sync.settle([Requeue(q, "mine1", "dead:1"), Requeue(q, "other", "dead:1")]) == [b"other"]
        assert r.lrange(keys.pending_key(q), 0, -1) == [b"mine1"]
    finally:
        client.close()


def test_extend_leases_never_creates_and_reports_a_failing_queue(redis_url, r, q, q2):
    seed_active(r, q, "a", lease_in=2)
    r.set(keys.lease_key(q2), "wrong type")
    client = redis.Redis.from_url(redis_url)
    try:
        sync = SyncBroker(client)
        extended, error = sync.extend_leases({q: ["a", "unknown"]}, 60)
        assert extended == {q: ["a", "unknown"]} and error is None
        assert abs(r.zscore(keys.lease_key(q), "a") - (r.time()[0] + 60)) <= 1
        assert r.zscore(keys.lease_key(q), "unknown") is None
        extended, error = sync.extend_leases({q2: ["b"], q: ["a"]}, 90)
        assert extended == {q: ["a"]} and isinstance(error, redis.exceptions.ResponseError)
        assert abs(r.zscore(keys.lease_key(q), "a") - (r.time()[0] + 90)) <= 1
        sync.cluster = True  # one call per queue: stops at the failing one, keeps what went before
        extended, error = sync.extend_leases({q: ["a"], q2: ["b"]}, 120)
        assert extended == {q: ["a"]} and isinstance(error, redis.exceptions.ResponseError)
    finally:
        client.close()


def test_heartbeat_registers_and_clear_server_state_deregisters(redis_url, r):
    sid = uuid.uuid4().hex
    server_key, workers_key = keys.server_info_key("h", 1, sid), keys.workers_key("h", 1, sid)

    async def beat(b: Broker) -> Any:
        return await b.heartbeat(server_key, workers_key, 10, b"info", [("t1", b"w1")])

    try:
        info = run(redis_url, beat)
        assert info["redis_version"] and "run_id" in info
        assert r.get(server_key) == b"info" and r.hgetall(workers_key) == {b"t1": b"w1"}
        assert 0 < r.ttl(server_key) <= 10
        assert r.zscore(keys.ALL_SERVERS, server_key) and r.zscore(keys.ALL_WORKERS, workers_key)
        run(redis_url, lambda b: b.clear_server_state(server_key, workers_key))
        assert not r.exists(server_key, workers_key)
        assert r.zscore(keys.ALL_SERVERS, server_key) is None and r.zscore(keys.ALL_WORKERS, workers_key) is None
        run(redis_url, beat)
        client = redis.Redis.from_url(redis_url)
        try:
            SyncBroker(client).clear_server_state(server_key, workers_key)
        finally:
            client.close()
        assert not r.exists(server_key, workers_key) and r.zscore(keys.ALL_SERVERS, server_key) is None
    finally:
        r.zrem(keys.ALL_SERVERS, server_key)
        r.zrem(keys.ALL_WORKERS, workers_key)
        r.delete(server_key, workers_key)


def test_write_result_sets_the_field_of_an_existing_task_only(redis_url, r, q):
    seed_active(r, q, "t")
    assert run(redis_url, lambda b: b.write_result(q, "t", b"\x00out")) is True
    assert r.hget(keys.task_key(q, "t"), "result") == b"\x00out"
    assert run(redis_url, lambda b: b.write_result(q, "gone", b"x")) is False
    assert not r.exists(keys.task_key(q, "gone"))


def test_register_queues_and_load_scripts(redis_url, r, q, q2):
    from fastq._rdb.scripts import SCRIPTS

    try:
        run(redis_url, lambda b: b.register_queues([q, q2]))
        assert {q.encode(), q2.encode()} <= r.smembers(keys.ALL_QUEUES)
    finally:
        r.srem(keys.ALL_QUEUES, q, q2)
    r.script_flush()
    shas = [s.sha for s in SCRIPTS.values()]
    assert not any(r.script_exists(*shas))
    assert run(redis_url, lambda b: b.load_scripts()) == len(shas)
    assert all(r.script_exists(*shas))
    assert run(redis_url, lambda b: b.load_scripts()) == 0  # a second worker sends no sources
    r.execute_command("SCRIPT", "FLUSH")
    r.script_load(SCRIPTS["done"].source)
    assert run(redis_url, lambda b: b.load_scripts()) == len(shas) - 1
    assert all(r.script_exists(*shas))
