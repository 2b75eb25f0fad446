"""fastq._rdb.aggregation against a real Redis: each operation on Asynq's group layout.

Each test works on its own queue (``q`` fixture) and deletes the queue's keys afterwards.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis.asyncio

import fastq
from fastq import keys
from fastq._codec import TaskMessage, decode_message, encode_message
from fastq._rdb import aggregation as agg
from fastq.options import plan_enqueue

RULES = agg.GroupRules(max_size=0, max_delay=0, grace_period=60, set_timeout=120)


def drop(r, queue: str) -> None:
    """Delete every key of ``queue``."""
    found = list(r.scan_iter(match=f"asynq:{{{queue}}}:*"))
    if found:
        r.delete(*found)
    r.srem(keys.ALL_QUEUES, queue)


@pytest.fixture
def q(r):
    name = f"rdb-agg-{uuid.uuid4().hex[:8]}"
    yield name
    drop(r, name)


def run(redis_url: str, op: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one ``agg`` operation on a fresh redis.asyncio client."""
    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await op(client, *args, **kwargs)
        finally:
            await client.aclose()
    return asyncio.run(main())


def msg(q: str, tid: str, payload: bytes = b"") -> bytes:
    return encode_message(TaskMessage(type="item", payload=payload or tid.encode(), id=tid, queue=q,
                                      retry=25, timeout=1800))


def add(r, q: str, group: bytes, tid: str, score: float, listed: bool = True) -> None:
    """An aggregating task as Go Asynq's client writes it."""
    r.hset(keys.task_key(q, tid), mapping={"msg": msg(q, tid), "state": "aggregating", "group": group})
    r.zadd(agg.group_key(q, group), {tid: score})
    if listed:
        r.sadd(keys.groups_key(q), group)


def make_set(r, q: str, group: bytes, tids: list[str], deadline: float, set_id: str = "s1") -> bytes:
    """An aggregation set holding ``tids`` (scores 1, 2, ...), registered with ``deadline``."""
    key = agg.set_key(q, group, set_id)
    for i, tid in enumerate(tids):
        r.hset(keys.task_key(q, tid), mapping={"msg": msg(q, tid), "state": "aggregating", "group": group})
        r.zadd(key, {tid: i + 1})
    r.zadd(keys.all_aggregation_sets_key(q), {key: deadline})
    return key


# ----------------------------------------------------------------- names and keys

def test_group_names_and_keys_take_any_bytes_in_the_queue_slot():
    assert agg.group_name(b"\xff") == b"\xff"
    assert agg.group_name("caf\xe9") == "caf\xe9".encode()
    assert agg.group_name("bad\udcff") == b"bad\xff"  # a surrogate escape gives its byte back
    assert agg.group_key("q1", b"g\xff") == keys.group_key_prefix("q1").encode() + b"g\xff"
    assert agg.set_key("q1", b"g", "id") == keys.aggregation_set_key("q1", "g", "id").encode()
    call = agg.check_call("q1", b"g", "id", RULES)
    assert all(b"{q1}" in (k if isinstance(k, bytes) else k.encode()) for k in call.args[0])


# ----------------------------------------------------------------- groups

def test_list_groups_reads_every_name_sorted_over_several_scan_steps(redis_url, r, q):
    assert run(redis_url, agg.list_groups, q) == []
    names = [f"g{i:04d}".encode() for i in range(2500)] + [b"\xff\xfe", b"a:b"]
    r.sadd(keys.groups_key(q), *names)
    assert run(redis_url, agg.list_groups, q) == sorted(names)


def test_make_ready_sets_moves_ready_groups_into_registered_sets(redis_url, r, q):
    now = time.time()
    add(r, q, b"old\xff", "o1", now - 100)
    add(r, q, b"old\xff", "o2", now - 90)
    add(r, q, b"fresh", "f1", now)
    r.sadd(keys.groups_key(q), b"empty")
    groups = [b"empty", b"fresh", b"old\xff"]

    made = run(redis_url, agg.make_ready_sets, q, groups, RULES)
    assert [g for g, _ in made] == [b"old\xff"]
    set_id = made[0][1]
    uuid.UUID(set_id)  # a fresh ID per set
    key = agg.set_key(q, b"old\xff", set_id)
    assert r.zrange(key, 0, -1) == [b"o1", b"o2"]
    deadline = r.zscore(keys.all_aggregation_sets_key(q), key)
    assert abs(deadline - (now + RULES.set_timeout)) < 5
    assert not r.exists(agg.group_key(q, b"old\xff"))
    assert r.zrange(agg.group_key(q, b"fresh"), 0, -1) == [b"f1"]  # within its grace period
    assert r.smembers(keys.groups_key(q)) == {b"fresh"}  # the taken and the empty group unlisted


def test_make_ready_sets_takes_max_size_tasks_and_checks_in_pages(redis_url, r, q, monkeypatch):
    monkeypatch.setattr(agg, "CHECK_PAGE", 2)
    now = time.time()
    groups = [f"g{i}".encode() for i in range(5)]
    for g in groups:
        for j in range(3):
            add(r, q, g, f"{g.decode()}-{j}", now - 10 + j)
    rules = RULES._replace(max_size=2)
    made = run(redis_url, agg.make_ready_sets, q, groups, rules)
    assert [g for g, _ in made] == groups
    for g, set_id in made:
        assert r.zrange(agg.set_key(q, g, set_id), 0, -1) == [f"{g.decode()}-0".encode(), f"{g.decode()}-1".encode()]
        assert r.zrange(agg.group_key(q, g), 0, -1) == [f"{g.decode()}-2".encode()]
    assert len({set_id for _, set_id in made}) == 5


# ----------------------------------------------------------------- one set

def test_read_set_returns_every_member_in_pages_and_none_once_reclaimed(redis_url, r, q):
    tids = [f"t{i}" for i in range(7)]
    key = make_set(r, q, b"g", tids, time.time() + 100)
    r.hset(keys.task_key(q, "t3"), "state", "pending")  # changed by hand: skipped
    r.delete(keys.task_key(q, "t5"))  # gone: skipped
    members = run(redis_url, agg.read_set, q, key, page=2)
    assert [m[0] for m in members] == [b"t0", b"t1", b"t2", b"t4", b"t6"]
    assert decode_message(members[0][1]).id == "t0"
    assert run(redis_url, agg.read_set, q, key) == [(m, msg(q, m.decode())) for m, _ in members]

    r.zrem(keys.all_aggregation_sets_key(q), key)
    assert run(redis_url, agg.read_set, q, key) is None


def test_finish_aggregation_enqueues_and_deletes_the_set_with_its_tasks(redis_url, r, q):
    key = make_set(r, q, b"g", ["a", "b", "bad"], time.time() + 100)
    plan = plan_enqueue(fastq.Task("batch", b"ab"), {"queue": q, "task_id": "agg-1"})
    archived = encode_message(TaskMessage(type="fastq:undecodable", payload=b"x", id="bad", queue=q))
    assert run(redis_url, agg.finish_aggregation, q, key, plan, [("bad", archived)]) == agg.DONE
    assert r.lrange(keys.pending_key(q), 0, -1) == [b"agg-1"]
    assert r.hget(keys.task_key(q, "agg-1"), "state") == b"pending"
    assert decode_message(r.hget(keys.task_key(q, "agg-1"), "msg")).payload == b"ab"
    assert not r.exists(key, keys.task_key(q, "a"), keys.task_key(q, "b"))
    assert r.zcard(keys.all_aggregation_sets_key(q)) == 0
    assert r.hget(keys.task_key(q, "bad"), "state") == b"archived"
    assert r.zrange(keys.archived_key(q), 0, -1) == [b"bad"]


def test_finish_aggregation_schedules_or_groups_the_task(redis_url, r, q):
    key = make_set(r, q, b"g", ["a"], time.time() + 100, "s1")
    plan = plan_enqueue(fastq.Task("batch", b"x"), {"queue": q, "task_id": "later", "process_in": 3600})
    assert run(redis_url, agg.finish_aggregation, q, key, plan) == agg.DONE
    assert abs(r.zscore(keys.scheduled_key(q), "later") - (time.time() + 3600)) < 5

    key = make_set(r, q, b"g", ["b"], time.time() + 100, "s2")
    plan = plan_enqueue(fastq.Task("batch", b"y"), {"queue": q, "task_id": "again", "group": "next"})
    assert run(redis_url, agg.finish_aggregation, q, key, plan) == agg.DONE
    assert r.zrange(keys.group_key(q, "next"), 0, -1) == [b"again"]
    assert r.sismember(keys.groups_key(q), "next")
    assert r.hget(keys.task_key(q, "again"), "state") == b"aggregating"


def test_finish_aggregation_with_nothing_to_enqueue_only_archives_and_deletes(redis_url, r, q):
    key = make_set(r, q, b"g", ["bad"], time.time() + 100)
    archived = encode_message(TaskMessage(type="fastq:undecodable", payload=b"x", id="bad", queue=q))
    assert run(redis_url, agg.finish_aggregation, q, key, None, [("bad", archived)]) == agg.DONE
    assert r.llen(keys.pending_key(q)) == 0
    assert r.hget(keys.task_key(q, "bad"), "state") == b"archived" and not r.exists(key)


def test_finish_aggregation_refuses_a_reclaimed_set_a_taken_id_and_a_held_unique_key(redis_url, r, q):
    key = make_set(r, q, b"g", ["a"], time.time() + 100)
    r.zrem(keys.all_aggregation_sets_key(q), key)
    plan = plan_enqueue(fastq.Task("batch", b"x"), {"queue": q, "task_id": "t"})
    assert run(redis_url, agg.finish_aggregation, q, key, plan) == agg.NOT_OURS
    assert r.zrange(key, 0, -1) == [b"a"] and not r.exists(keys.task_key(q, "t"))

    r.zadd(keys.all_aggregation_sets_key(q), {key: time.time() + 100})
    r.hset(keys.task_key(q, "t"), "state", "pending")
    assert run(redis_url, agg.finish_aggregation, q, key, plan) == agg.ID_CONFLICT
    assert r.zrange(key, 0, -1) == [b"a"]

    unique = plan_enqueue(fastq.Task("batch", b"u"), {"queue": q, "task_id": "u", "unique": 60})
    r.set(unique.msg.unique_key, "someone")
    assert run(redis_url, agg.finish_aggregation, q, key, unique) == agg.DUPLICATE
    assert r.zrange(key, 0, -1) == [b"a"] and r.get(unique.msg.unique_key) == b"someone"


# ----------------------------------------------------------------- stale sets

def test_reclaim_stale_sets_puts_members_back_in_batches_and_leaves_live_sets(redis_url, r, q):
    other = f"{q}-b"
    try:
        past = time.time() - 10
        stale = [make_set(r, q, b"g\xff", [f"s{i}"], past, f"set{i}") for i in range(5)]
        live = make_set(r, q, b"live", ["l1"], time.time() + 100)
        r.delete(keys.task_key(q, "s4"))  # gone: not put back
        other_set = make_set(r, other, b"h", ["o1"], past)
        assert run(redis_url, agg.reclaim_stale_sets, [q, other], batch=2) == 6
        assert r.zrange(agg.group_key(q, b"g\xff"), 0, -1) == [b"s0", b"s1", b"s2", b"s3"]
        assert r.smembers(keys.groups_key(q)) == {b"g\xff"}
        assert not r.exists(*stale, other_set)
        assert r.zrange(keys.all_aggregation_sets_key(q), 0, -1) == [live]
        assert r.zrange(agg.group_key(other, b"h"), 0, -1) == [b"o1"]
        assert run(redis_url, agg.reclaim_stale_sets, [q, other]) == 0
    finally:
        drop(r, other)


# ----------------------------------------------------------------- groups missing from asynq:{q}:groups

def test_list_aggregation_sets_gives_none_past_the_limit(redis_url, r, q):
    assert run(redis_url, agg.list_aggregation_sets, q, 3) == []
    made = [make_set(r, q, b"g", [f"t{i}"], time.time() + i, f"s{i}") for i in range(3)]
    assert run(redis_url, agg.list_aggregation_sets, q, 3) == made  # earliest deadline first
    make_set(r, q, b"g", ["t3"], time.time() + 3, "s3")
    assert run(redis_url, agg.list_aggregation_sets, q, 3) is None


def test_relist_groups_lists_vanished_sets_groups_across_batches(redis_url, r, q, monkeypatch):
    monkeypatch.setattr(agg, "RECLAIM_BATCH", 2)
    now = time.time()
    names = [f"g{i}".encode() for i in range(5)]
    for name in names:
        add(r, q, name, f"{name.decode()}-1", now, listed=False)
    vanished = [agg.set_key(q, name, "gone") for name in names] + [agg.set_key(q, b"empty", "gone")]
    assert run(redis_url, agg.relist_groups, q, vanished) == names
    assert r.smembers(keys.groups_key(q)) == set(names)
    assert run(redis_url, agg.relist_groups, q, vanished) == []  # listed now
    assert run(redis_url, agg.relist_groups, q, []) == []


def test_discover_groups_sweeps_several_queues_at_once_and_paces_itself(redis_url, r, q):
    other = f"{q}-b"
    try:
        now = time.time()
        add(r, q, b"lost", "a1", now, listed=False)
        add(r, q, b"listed", "a2", now)
        add(r, other, b"\xfe", "b1", now, listed=False)
        for i in range(50):
            r.set(f"asynq:{{{q}}}:t:filler{i}", "x")
        started = time.monotonic()
        found = run(redis_url, agg.discover_groups, [q, other, q], count=20, duty=0.5)
        assert found == {q: [b"lost"], other: [b"\xfe"]}
        assert time.monotonic() - started < 5
        assert r.smembers(keys.groups_key(q)) == {b"lost", b"listed"}
        assert r.smembers(keys.groups_key(other)) == {b"\xfe"}
        assert run(redis_url, agg.discover_groups, [q, other]) == {}
        assert run(redis_url, agg.discover_groups, []) == {}
    finally:
        drop(r, other)


def test_discover_call_escapes_a_single_queue_pattern():
    call = agg.discover_call(["a*b"], 0, 10)
    assert call.args[1][1] == "asynq:{a\\*b}:g:*"
    assert agg.discover_call(["a", "b"], 0, 10).args[1][1] == "asynq:{*}:g:*"


def test_discover_groups_waits_between_steps_only_below_full_duty(redis_url, r, q, monkeypatch):
    for i in range(60):
        r.set(f"asynq:{{{q}}}:g:x{i}", "not a zset")
    waits: list[float] = []
    sleep = asyncio.sleep

    async def recorded(delay: float) -> None:
        waits.append(delay)
        await sleep(0)

    monkeypatch.setattr(agg.asyncio, "sleep", recorded)
    assert run(redis_url, agg.discover_groups, [q], count=10) == {}
    assert waits == []
    assert run(redis_url, agg.discover_groups, [q], count=10, duty=0.25) == {}
    assert len(waits) >= 2 and all(w > 0 for w in waits)  # a wait after each step but the last
