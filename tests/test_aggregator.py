"""Group aggregation against a real Redis: in-process workers, Go-layout data, races, reclaim, bad input."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

import pytest
import redis.asyncio
from helpers import RunningWorker, async_wait_for, golden

import fastq
from fastq import keys
from fastq._codec import decode_message
from fastq._rdb import scripts as _scripts
from fastq.errors import InvalidOptionError
from fastq.server.aggregator import SET_TIMEOUT, Aggregator, aggregated_plan, check_interval

Q = "default"
GROUPS = keys.groups_key(Q)
SETS = keys.all_aggregation_sets_key(Q)


def joined(group: str, tasks: list[fastq.Task]) -> fastq.Task:
    """An aggregator: one "batch" task whose payload lists the group and the payloads, in order."""
    return fastq.Task("batch", group.encode() + b"=" + b",".join(t.payload for t in tasks))


class Batches:
    """Handler of the aggregated "batch" tasks: records (group, [payloads]) per run."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[bytes]]] = []
        self.meta: list[tuple[str, int]] = []

    async def __call__(self, task: fastq.Task) -> None:
        assert task.type == "batch", task
        group, _, items = task.payload.partition(b"=")
        self.seen.append((group.decode(), items.split(b",") if items else []))
        self.meta.append((fastq.get_task_id(), fastq.get_max_retry()))

    def items(self) -> list[bytes]:
        return [p for _, batch in self.seen for p in batch]


def add_go_style(r, group: str | bytes, tid: str, msg: bytes, score: int, queue: str = Q,
                 listed: bool = True) -> None:
    """Write an aggregating task exactly as Go Asynq's client (addToGroup) does.

    ``listed=False`` leaves the group name out of ``asynq:{q}:groups``, as Go's recoverer
    leaves a reclaimed group. ``group`` may be bytes (any name, UTF-8 or not)."""
    name = group if isinstance(group, bytes) else group.encode()
    r.sadd("asynq:queues", queue)
    r.hset(keys.task_key(queue, tid), mapping={"msg": msg, "state": "aggregating", "group": name})
    r.zadd(keys.group_key_prefix(queue).encode() + name, {tid: score})
    if listed:
        r.sadd(keys.groups_key(queue), name)


def item_msg(tid: str, payload: bytes, queue: str = Q) -> bytes:
    from fastq._codec import TaskMessage, encode_message

    return encode_message(TaskMessage(type="item", payload=payload, id=tid, queue=queue, retry=25, timeout=1800))


def raw_joined(group: str, tasks: list[fastq.Task]) -> fastq.Task:
    """``joined`` for any group name: a non-UTF-8 name comes as a str with surrogate escapes."""
    return fastq.Task("batch", group.encode("utf-8", "surrogateescape") + b"=" + b",".join(t.payload for t in tasks))


def left_over(r) -> list[str]:
    """Keys of queue Q other than counters, pending/active/completed bookkeeping."""
    ignore = ("processed", "failed", "pending", "active", "lease")
    return sorted(k.decode() for k in r.keys("asynq:{default}:*")
                  if not any(k.decode().split(":", 2)[2].startswith(i) for i in ignore))


def enqueue_group(redis_url: str, group: str, payloads: list[bytes], **options) -> None:
    with fastq.Client(redis_url) as client:
        for p in payloads:
            client.enqueue(fastq.Task("item", p), group=group, **options)


def run_aggregator_once(redis_url, aggregate) -> tuple[int, int]:
    """One aggregation run without a worker: (sets made, sets finished)."""
    async def main():
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            agg = Aggregator(client, fastq.WorkerConfig(redis_url=redis_url, group_grace_period=1,
                                                        group_aggregator=aggregate))
            return await agg.run_once(), agg.aggregated
        finally:
            await client.aclose()

    return asyncio.run(main())


# ----------------------------------------------------------------- the three triggers

def test_grace_period_aggregates_a_quiet_group_and_deletes_its_tasks(redis_url, r):
    handler = Batches()
    calls = []

    async def aggregate(group, tasks):
        calls.append((group, [t.type for t in tasks]))
        return joined(group, tasks)

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=aggregate, group_grace_period=1):
            enqueue_group(redis_url, "g1", [b"a", b"b", b"c"])
            started = time.monotonic()
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated task")
            return time.monotonic() - started

    took = asyncio.run(main())
    assert calls == [("g1", ["item", "item", "item"])]
    assert sorted(handler.items()) == [b"a", b"b", b"c"]
    assert handler.seen[0][0] == "g1"
    assert took < 6  # grace 1 s, whole-second scores, check every 1 s (Asynq's 7 s tick would miss this)
    assert left_over(r) == []  # group, groups, set, set index and the three task hashes are gone


def test_a_group_that_keeps_growing_waits_for_its_grace_period(redis_url, r):
    """Script level: the check refuses while the newest task is younger than the grace period."""
    enqueue_group(redis_url, "busy", [b"x"])
    set_key = keys.aggregation_set_key(Q, "busy", "s1")
    check = [keys.group_key(Q, "busy"), set_key, SETS, GROUPS]
    assert _scripts.AGGREGATION_CHECK.run(r, check, [0, 0, 5, SET_TIMEOUT, "busy"]) == 0
    assert r.zcard(keys.group_key(Q, "busy")) == 1 and not r.exists(set_key)
    # An old task and a new one: the grace period counts from the newest.
    r.zadd(keys.group_key(Q, "busy"), {"older": int(time.time()) - 100})
    assert _scripts.AGGREGATION_CHECK.run(r, check, [0, 0, 5, SET_TIMEOUT, "busy"]) == 0
    # max delay counts from the oldest.
    assert _scripts.AGGREGATION_CHECK.run(r, check, [0, 50, 5, SET_TIMEOUT, "busy"]) == 1
    assert r.zcard(set_key) == 2 and not r.exists(keys.group_key(Q, "busy"))
    assert not r.sismember(GROUPS, "busy")
    deadline = r.zscore(SETS, set_key)
    assert abs(deadline - (time.time() + SET_TIMEOUT)) < 3


def test_max_size_makes_sets_of_the_oldest_tasks(redis_url, r):
    handler = Batches()
    # Same-second scores tie; Redis then orders by member, so sortable IDs make the order certain.
    with fastq.Client(redis_url) as client:
        for i in range(7):
            client.enqueue(fastq.Task("item", b"%d" % i), group="g", task_id=f"t{i}")

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=joined, group_grace_period=60,
                                 group_max_size=3):
            await async_wait_for(lambda: len(handler.seen) == 2, timeout=8, what="two batches")
            await asyncio.sleep(0.3)

    asyncio.run(main())
    assert handler.seen == [("g", [b"0", b"1", b"2"]), ("g", [b"3", b"4", b"5"])]
    assert r.zrange(keys.group_key(Q, "g"), 0, -1) == [b"t6"]  # one task waits for more (grace 60 s)
    assert r.sismember(GROUPS, "g")
    assert r.hget(keys.task_key(Q, "t6"), "state") == b"aggregating"
    assert not r.exists(keys.task_key(Q, "t0")) and r.zcard(SETS) == 0


def test_max_delay_aggregates_a_group_that_never_goes_quiet(redis_url, r):
    handler = Batches()

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=joined, group_grace_period=60,
                                 group_max_delay=1):
            enqueue_group(redis_url, "slow", [b"first"])
            started = time.monotonic()
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated task")
            return time.monotonic() - started

    took = asyncio.run(main())
    assert handler.seen == [("slow", [b"first"])]
    assert took < 6  # not the 60 s grace period nor a 7 s tick: max delay 1 s, checked every 1 s


def test_the_aggregated_task_wakes_idle_workers_like_a_client_enqueue(redis_url, r):
    """finish_aggregation publishes on the queue's fastq_notify channel when pending was empty."""
    enqueue_group(redis_url, "wake", [b"x"], task_id="w1")
    r.zadd(keys.group_key(Q, "wake"), {"w1": 0}, xx=True)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.notify_channel(Q))

    async def main():
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            cfg = fastq.WorkerConfig(redis_url=redis_url, group_grace_period=1, group_aggregator=joined)
            return await Aggregator(client, cfg).run_once()
        finally:
            await client.aclose()

    try:
        assert asyncio.run(main()) == 1
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
        assert message is not None and message["channel"] == keys.notify_channel(Q).encode()
    finally:
        pubsub.close()
    assert r.llen(keys.pending_key(Q)) == 1


def test_check_interval_follows_asynq_and_max_delay():
    assert check_interval(fastq.WorkerConfig()) == 7.0
    assert check_interval(fastq.WorkerConfig(group_grace_period=2)) == 2.0
    assert check_interval(fastq.WorkerConfig(group_grace_period=60, group_max_delay=3)) == 3.0


# ----------------------------------------------------------------- Go layout

def test_tasks_written_by_go_asynq_are_aggregated(redis_url, r):
    state = next(s for s in golden("redis_states.json")["states"] if s["name"] == "aggregating")
    now = int(time.time())
    for key in state["keys"]:
        if key["type"] == "hash":
            tid = key["key"].rsplit(":", 1)[1]
            add_go_style(r, key["fields"]["group"], tid, bytes.fromhex(key["fields"]["msg"]["hex"]), now - 5)
    handler = Batches()
    received = []

    def aggregate(group, tasks):  # a plain def runs in a thread
        received.extend((t.type, t.payload) for t in tasks)
        return joined(group, tasks)

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=aggregate, group_grace_period=1):
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated task")

    asyncio.run(main())
    assert received == [("batch:item", b"item1"), ("batch:item", b"item2")]
    assert handler.seen == [("g1", [b"item1", b"item2"])]
    assert left_over(r) == []


# ----------------------------------------------------------------- several workers

def test_two_workers_never_aggregate_the_same_task_twice(redis_url, r):
    groups = [f"g{i}" for i in range(6)]
    with fastq.Client(redis_url) as client:
        for i in range(240):
            client.enqueue(fastq.Task("item", b"%d" % i), group=groups[i % len(groups)])
    handler = Batches()
    aggregated: list[bytes] = []
    calls = []

    def aggregate(group, tasks):
        calls.append(group)
        aggregated.extend(t.payload for t in tasks)
        time.sleep(0.005)  # widen the window between check and finish
        return joined(group, tasks)

    async def main():
        options = dict(group_aggregator=aggregate, group_grace_period=1, group_max_size=7)
        async with RunningWorker(handler, redis_url, **options), RunningWorker(handler, redis_url, **options):
            with fastq.Client(redis_url) as client:  # more tasks while both workers aggregate
                for i in range(240, 300):
                    client.enqueue(fastq.Task("item", b"%d" % i), group=groups[i % len(groups)])
                    await asyncio.sleep(0.002)
            await async_wait_for(lambda: len(handler.items()) >= 300, timeout=15, what="every task aggregated")
            await asyncio.sleep(0.5)

    asyncio.run(main())
    expected = sorted(b"%d" % i for i in range(300))
    assert sorted(aggregated) == expected  # each task given to exactly one aggregate call
    assert sorted(handler.items()) == expected  # and run in exactly one aggregated task
    assert len(handler.seen) == len(calls)
    assert all(len(batch) <= 7 for _, batch in handler.seen)
    assert left_over(r) == []


def test_concurrent_checks_put_every_task_in_exactly_one_set(redis_url, r):
    """Script level: 40 concurrent checks from two connections on one group (max size 10)."""
    with fastq.Client(redis_url) as client:
        client.enqueue_many([fastq.Task("item", b"%d" % i) for i in range(200)], group="race")

    async def checks(client):
        async def one():
            set_key = keys.aggregation_set_key(Q, "race", str(uuid.uuid4()))
            ok = await _scripts.AGGREGATION_CHECK.arun(
                client, [keys.group_key(Q, "race"), set_key, SETS, GROUPS], [10, 0, 60, SET_TIMEOUT, "race"])
            return set_key if ok else None
        return await asyncio.gather(*(one() for _ in range(20)))

    async def main():
        a, b = redis.asyncio.Redis.from_url(redis_url), redis.asyncio.Redis.from_url(redis_url)
        try:
            made = await asyncio.gather(checks(a), checks(b))
            return [k for ks in made for k in ks if k]
        finally:
            await a.aclose()
            await b.aclose()

    made = asyncio.run(main())
    set_keys = [k.decode() for k in r.zrange(SETS, 0, -1)]
    assert sorted(made) == sorted(set_keys)
    assert len(set_keys) == 20  # 200 tasks / 10; the other 20 checks found nothing left
    members = [m for k in set_keys for m in r.zrange(k, 0, -1)]
    assert len(members) == 200 and len(set(members)) == 200
    assert not r.exists(keys.group_key(Q, "race")) and not r.sismember(GROUPS, "race")


def test_a_big_group_is_never_read_whole(redis_url, r):
    """100,000 waiting tasks, max size 100: each check moves 100 tasks, not the group."""
    group_key = keys.group_key(Q, "big")
    now = int(time.time())
    pipe = r.pipeline(transaction=False)
    for start in range(0, 100_000, 10_000):
        pipe.zadd(group_key, {f"id{i:06d}": now for i in range(start, start + 10_000)})
    pipe.sadd(GROUPS, "big")
    pipe.execute()
    set_keys = [keys.aggregation_set_key(Q, "big", f"s{i}") for i in range(50)]
    args = [100, 0, 60, SET_TIMEOUT, "big"]
    started = time.perf_counter()
    for set_key in set_keys:
        assert _scripts.AGGREGATION_CHECK.run(r, [group_key, set_key, SETS, GROUPS], args) == 1
    took = time.perf_counter() - started
    # Copying 100,000 members takes tens of ms per call (seconds for 50); 100 members take ~0.1 ms.
    assert took < 1.5, took
    assert r.zcard(group_key) == 100_000 - 5_000
    assert r.zrange(set_keys[0], 0, -1)[:2] == [b"id000000", b"id000001"]
    assert r.zrange(set_keys[-1], -1, -1) == [b"id004999"]
    assert r.sismember(GROUPS, "big")
    # Not ready (grace 60 s, newest is fresh, under max size): answered without moving anything.
    r.zremrangebyrank(group_key, 50, -1)
    assert _scripts.AGGREGATION_CHECK.run(r, [group_key, "asynq:{default}:g:big:x", SETS, GROUPS], args) == 0


def test_a_set_larger_than_a_read_page_reaches_the_aggregator_whole_and_in_order(redis_url, r):
    now = int(time.time()) - 10
    pipe = r.pipeline(transaction=False)
    from fastq._codec import TaskMessage, encode_message

    for i in range(2500):
        tid = f"t{i:05d}"
        msg = encode_message(TaskMessage(type="item", payload=b"%d" % i, id=tid, queue=Q, retry=25, timeout=1800,
                                         group_key="many"))
        pipe.hset(keys.task_key(Q, tid), mapping={"msg": msg, "state": "aggregating", "group": "many"})
        pipe.zadd(keys.group_key(Q, "many"), {tid: now})
    pipe.sadd(GROUPS, "many")
    pipe.execute()
    sizes = []

    def aggregate(group, tasks):
        sizes.append([int(t.payload) for t in tasks])
        return fastq.Task("batch", b"many=" + b"%d" % len(tasks))

    handler = Batches()

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=aggregate, group_grace_period=1):
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated task")

    asyncio.run(main())
    assert sizes == [list(range(2500))]
    assert left_over(r) == []


# ----------------------------------------------------------------- stale sets and failures

def test_stale_sets_are_reclaimed_by_any_worker_and_the_group_is_listed_again(redis_url, r):
    """A Go-layout set whose worker died (deadline passed) goes back to its group; a live set stays."""
    now = int(time.time())
    stale = keys.aggregation_set_key(Q, "g:with:colons", "3f9a7e4c-0000-4000-8000-000000000001")
    live = keys.aggregation_set_key(Q, "other", "3f9a7e4c-0000-4000-8000-000000000002")
    for tid, _key, group in (("s1", stale, "g:with:colons"), ("s2", stale, "g:with:colons"),
                             ("l1", live, "other")):
        r.hset(keys.task_key(Q, tid), mapping={"msg": b"x", "state": "aggregating", "group": group})
    r.zadd(stale, {"s1": now - 300, "s2": now - 200, "gone": now - 100})  # "gone": its hash was deleted
    r.zadd(live, {"l1": now - 50})
    r.zadd(SETS, {stale: now - 1, live: now + 100})
    r.sadd("asynq:queues", Q)

    async def main():
        async with RunningWorker(lambda task: None, redis_url):  # no group_aggregator
            await async_wait_for(lambda: not r.exists(stale), timeout=5, what="reclaim")

    asyncio.run(main())
    group = keys.group_key(Q, "g:with:colons")
    assert r.zrange(group, 0, -1, withscores=True) == [(b"s1", now - 300), (b"s2", now - 200)]
    assert r.smembers(GROUPS) == {b"g:with:colons"}  # Go would leave it out of the groups set
    assert r.zrange(SETS, 0, -1) == [live.encode()]
    assert r.zrange(live, 0, -1) == [b"l1"]
    assert r.hget(keys.task_key(Q, "s1"), "state") == b"aggregating"


def test_an_aggregator_that_raises_keeps_the_set_until_it_is_reclaimed_then_retries(redis_url, r, caplog):
    handler = Batches()
    calls = []

    async def aggregate(group, tasks):
        calls.append([t.payload for t in tasks])
        if len(calls) == 1:
            raise RuntimeError("database down")
        return joined(group, tasks)

    enqueue_group(redis_url, "flaky", [b"a", b"b"])

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=aggregate, group_grace_period=1):
            await async_wait_for(lambda: calls, timeout=8, what="first aggregate call")
            await asyncio.sleep(1.5)  # several checks and reclaims: nothing happens before the deadline
            assert len(calls) == 1 and not handler.seen
            (set_key, deadline), = r.zrange(SETS, 0, -1, withscores=True)
            assert abs(deadline - (time.time() + SET_TIMEOUT)) < 5
            assert sorted(r.zrange(set_key, 0, -1)) and r.zcard(keys.group_key(Q, "flaky")) == 0
            assert all(r.hget(keys.task_key(Q, tid.decode()), "state") == b"aggregating"
                       for tid in r.zrange(set_key, 0, -1))
            r.zadd(SETS, {set_key: int(time.time()) - 1}, xx=True)  # fast-forward to the deadline
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated after reclaim")

    with caplog.at_level(logging.ERROR, logger="fastq.aggregator"):
        asyncio.run(main())
    assert [sorted(c) for c in calls] == [[b"a", b"b"], [b"a", b"b"]]  # same-second scores: order by ID
    assert len(handler.seen) == 1 and sorted(handler.items()) == [b"a", b"b"]
    assert "database down" in caplog.text and "group='flaky'" in caplog.text
    assert left_over(r) == []


def test_a_set_reclaimed_while_its_aggregator_ran_is_not_enqueued(redis_url, r):
    """Fencing: the worker that lost its set (deadline passed, reclaimed) writes nothing."""
    enqueue_group(redis_url, "late", [b"a"])
    r.zadd(keys.group_key(Q, "late"), {r.zrange(keys.group_key(Q, "late"), 0, 0)[0]: int(time.time()) - 10}, xx=True)

    async def main():
        client = redis.asyncio.Redis.from_url(redis_url)
        reclaimed = []

        async def aggregate(group, tasks):  # while it runs, the set passes its deadline and is reclaimed
            (set_key,) = r.zrange(SETS, 0, -1)
            r.zadd(SETS, {set_key: 0}, xx=True)
            reclaimed.append(_scripts.RECLAIM_AGGREGATION_SETS.run(
                r, [SETS, GROUPS], [keys.group_key_prefix(Q), keys.task_key_prefix(Q), 10]))
            return joined(group, tasks)

        try:
            agg = Aggregator(client, fastq.WorkerConfig(redis_url=redis_url, group_aggregator=aggregate,
                                                        group_grace_period=1))
            made = await agg.run_once()
            return made, agg.aggregated, reclaimed
        finally:
            await client.aclose()

    made, finished, reclaimed = asyncio.run(main())
    assert (made, finished, reclaimed) == (1, 0, [1])
    assert r.llen(keys.pending_key(Q)) == 0  # no aggregated task
    assert r.zcard(keys.group_key(Q, "late")) == 1 and r.sismember(GROUPS, "late")  # back, to be aggregated again


def test_an_undecodable_member_is_archived_and_the_rest_aggregated(redis_url, r):
    now = int(time.time()) - 5
    enqueue_group(redis_url, "mixed", [b"good"], task_id="ok1")
    r.zadd(keys.group_key(Q, "mixed"), {"ok1": now}, xx=True)
    add_go_style(r, "mixed", "bad1", b"\xff\xff\xff not protobuf", now)
    handler = Batches()

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=joined, group_grace_period=1):
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated task")

    asyncio.run(main())
    assert handler.seen == [("mixed", [b"good"])]
    assert r.zrange(keys.archived_key(Q), 0, -1) == [b"bad1"]
    fields = r.hgetall(keys.task_key(Q, "bad1"))
    assert fields[b"state"] == b"archived"
    msg = decode_message(fields[b"msg"])
    assert (msg.type, msg.id, msg.payload) == ("fastq:undecodable", "bad1", b"\xff\xff\xff not protobuf")
    assert "undecodable" in msg.error_msg
    assert not r.exists(keys.task_key(Q, "ok1"))


def test_a_member_whose_id_is_not_utf8_is_archived_and_the_rest_aggregated(redis_url, r):
    """Before, decoding the member IDs of a set raised, so every run of that group failed forever."""
    now = int(time.time()) - 5
    enqueue_group(redis_url, "binid", [b"good"], task_id="ok2")
    r.zadd(keys.group_key(Q, "binid"), {"ok2": now}, xx=True)
    bad = b"\xff\xfe-member"
    r.hset(keys.task_key(Q, "").encode() + bad, mapping={"msg": item_msg("x", b"p"), "state": "aggregating",
                                                        "group": "binid"})
    r.zadd(keys.group_key(Q, "binid"), {bad: now})
    handler = Batches()

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=joined, group_grace_period=1):
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated task")

    asyncio.run(main())
    assert handler.seen == [("binid", [b"good"])]
    assert r.zrange(keys.archived_key(Q), 0, -1) == [bad]
    msg = decode_message(r.hget(keys.task_key(Q, "").encode() + bad, "msg"))
    assert msg.error_msg == "task ID is not valid UTF-8" and msg.id == "\\xff\\xfe-member"


# ----------------------------------------------------------------- groups missing from asynq:{q}:groups

class RawBatches:
    """Handler of "batch" tasks keeping the raw payloads (the group name may be any bytes)."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def __call__(self, task: fastq.Task) -> None:
        self.payloads.append(task.payload)

    def by_group(self) -> dict[bytes, list[bytes]]:
        out: dict[bytes, list[bytes]] = {}
        for p in self.payloads:
            group, _, items = p.partition(b"=")
            out.setdefault(group, []).extend(items.split(b","))
        return out


def test_groups_missing_from_the_groups_set_are_found_and_aggregated(redis_url, r):
    """Go's recoverer puts a reclaimed set back into its group zset but not the group name into
    asynq:{q}:groups: fastq finds such groups (also a non-UTF-8 name and a name with colons)
    without mistaking a live aggregation set, an empty or non-zset key for a group."""
    now = int(time.time()) - 5
    orphans = {b"orphan": [b"o1", b"o2"], b"\xff\xfe-bin": [b"b1"], b"g:with:colons": [b"c1", b"c2"]}
    for group, payloads in orphans.items():
        for p in payloads:
            tid = f"t-{p.decode()}"
            add_go_style(r, group, tid, item_msg(tid, p), now, listed=False)
    add_go_style(r, b"listed-\x80", "t-l1", item_msg("t-l1", b"l1"), now)  # non-UTF-8 name in the groups set
    live = keys.aggregation_set_key(Q, "other", "3f9a7e4c-0000-4000-8000-000000000002")
    r.hset(keys.task_key(Q, "s1"), mapping={"msg": item_msg("s1", b"s1"), "state": "aggregating", "group": "other"})
    r.zadd(live, {"s1": now})
    r.zadd(SETS, {live: now + 100})  # its worker is still on it
    r.set(keys.group_key(Q, "junk"), "not a zset")
    handler = RawBatches()
    groups_seen: list[str] = []

    def aggregate(group, tasks):
        groups_seen.append(group)
        return raw_joined(group, tasks)

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=aggregate, group_grace_period=1):
            await async_wait_for(lambda: len(handler.payloads) >= 4, timeout=10, what="four aggregated tasks")
            await asyncio.sleep(0.3)

    asyncio.run(main())
    assert handler.by_group() == {**orphans, b"listed-\x80": [b"l1"]}
    assert sorted(groups_seen) == sorted(g.decode("utf-8", "surrogateescape") for g in [*orphans, b"listed-\x80"])
    assert r.smembers(GROUPS) == set()  # found, aggregated, then dropped as empty
    assert r.zrange(SETS, 0, -1) == [live.encode()] and r.zrange(live, 0, -1) == [b"s1"]  # untouched
    assert r.get(keys.group_key(Q, "junk")) == b"not a zset"
    assert all(not r.exists(keys.group_key_prefix(Q).encode() + g) for g in orphans)


def test_a_group_orphaned_while_the_worker_runs_is_found_within_the_discovery_interval(redis_url, r, monkeypatch):
    from fastq.server import aggregator

    monkeypatch.setattr(aggregator, "DISCOVERY_INTERVAL", 1.0)
    handler = RawBatches()

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=raw_joined, group_grace_period=1):
            await asyncio.sleep(0.5)  # the start-up sweep has run and found nothing
            add_go_style(r, b"late\xc3", "t-x1", item_msg("t-x1", b"x1"), int(time.time()) - 5, listed=False)
            started = time.monotonic()
            await async_wait_for(lambda: handler.payloads, timeout=8, what="aggregated task")
            return time.monotonic() - started

    took = asyncio.run(main())
    assert handler.payloads == [b"late\xc3=x1"]
    assert took < 4  # next sweep (<= 1.1 s) + next check (1 s)
    assert left_over(r) == []


def test_a_set_reclaimed_by_go_while_the_worker_runs_has_its_group_listed_again_at_once(redis_url, r):
    """Go's recoverer puts a stale set's tasks back into the group zset but does not list the group:
    the worker, which saw the set, notices it vanish and lists the group within a check interval
    (no sweep: the next one is minutes away)."""
    now = int(time.time()) - 5
    group = b"go-\xe9"  # Latin-1 bytes: not UTF-8
    set_key = keys.group_key_prefix(Q).encode() + group + b":3f9a7e4c-0000-4000-8000-000000000004"
    r.sadd("asynq:queues", Q)
    for tid in ("m1", "m2"):
        r.hset(keys.task_key(Q, tid), mapping={"msg": item_msg(tid, tid.encode()), "state": "aggregating",
                                               "group": group})
    r.zadd(set_key, {"m1": now, "m2": now})
    r.zadd(SETS, {set_key: now + 1000})  # a Go worker is aggregating it
    handler = RawBatches()
    called: list[str] = []

    def aggregate(g, tasks):
        called.append(g)
        return raw_joined(g, tasks)

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=aggregate, group_grace_period=1):
            await asyncio.sleep(1.5)  # the start-up sweep and two checks: the set is seen, left alone
            assert not called and r.zcard(set_key) == 2
            # Go's reclaimStaleAggregationSets: members back into the group, set gone, group not listed
            r.zadd(keys.group_key_prefix(Q).encode() + group, {"m1": now, "m2": now})
            r.delete(set_key)
            r.zrem(SETS, set_key)
            started = time.monotonic()
            await async_wait_for(lambda: handler.payloads, timeout=8, what="aggregated task")
            return time.monotonic() - started

    took = asyncio.run(main())
    assert handler.payloads == [group + b"=m1,m2"] and called == [group.decode("utf-8", "surrogateescape")]
    assert took < 4  # seen vanished at the next check (1 s), listed, aggregated at the one after
    assert left_over(r) == []


def test_the_relist_script_lists_only_nonempty_unlisted_groups_of_vanished_sets(redis_url, r):
    now = int(time.time())
    add_go_style(r, "a:b", "a1", item_msg("a1", b"a1"), now, listed=False)  # group name with a colon
    add_go_style(r, "listed", "b1", item_msg("b1", b"b1"), now)
    live = keys.aggregation_set_key(Q, "x", "s2")
    r.zadd(live, {"z": now})
    r.zadd(SETS, {live: now + 100})
    r.set(keys.group_key(Q, "str"), "x")
    from fastq._rdb.aggregation import relist_groups

    async def main(set_keys):
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await relist_groups(client, Q, set_keys)
        finally:
            await client.aclose()

    vanished = [keys.aggregation_set_key(Q, g, "s1").encode() for g in ("a:b", "listed", "empty", "str")]
    vanished += [live.encode() + b":s3", b"asynq:{other}:g:a:b:s1", keys.group_key(Q, "nocolon").encode()]
    assert asyncio.run(main(vanished)) == [b"a:b"]  # a registered set is no group, other queues are ignored
    assert r.smembers(GROUPS) == {b"a:b", b"listed"}


def test_the_discovery_script_lists_only_unlisted_nonempty_group_zsets(redis_url, r):
    """Script level: one SCAN step per call; registered sets, listed groups, other types are skipped."""
    now = int(time.time())
    add_go_style(r, "listed", "a1", item_msg("a1", b"a1"), now)
    add_go_style(r, "lost", "b1", item_msg("b1", b"b1"), now, listed=False)
    add_go_style(r, b"\xff", "c1", item_msg("c1", b"c1"), now, listed=False)
    live = keys.aggregation_set_key(Q, "lost", "3f9a7e4c-0000-4000-8000-000000000003")
    r.hset(keys.task_key(Q, "d1"), mapping={"msg": b"x", "state": "aggregating", "group": "lost"})
    r.zadd(live, {"d1": now})
    r.zadd(SETS, {live: now + 100})
    # an unregistered key whose first member belongs to another group is not taken for a group
    r.hset(keys.task_key(Q, "e1"), mapping={"msg": b"x", "state": "aggregating", "group": "lost"})
    r.zadd(keys.group_key(Q, "lost:stray"), {"e1": now})
    r.set(keys.group_key(Q, "str"), "x")
    for i in range(300):  # other keys to scan past
        r.set(f"asynq:{{{Q}}}:t:filler{i}", "x")
    from fastq._rdb.aggregation import discover_groups

    async def main():
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await discover_groups(client, [Q, "empty-queue"], count=10)
        finally:
            await client.aclose()

    found = asyncio.run(main())
    assert found == {Q: sorted([b"lost", b"\xff"])}
    assert r.smembers(GROUPS) == {b"listed", b"lost", b"\xff"}
    assert asyncio.run(main()) == {}  # listed now: nothing more to add


# ----------------------------------------------------------------- what the aggregator returns

def test_the_aggregated_task_takes_the_options_returned_with_it(redis_url, r):
    handler = Batches()

    def aggregate(group, tasks):
        return joined(group, tasks), {"max_retry": 3, "task_id": f"agg-{group}"}

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=aggregate, group_grace_period=1):
            enqueue_group(redis_url, "opt", [b"x"])
            await async_wait_for(lambda: handler.seen, timeout=8, what="aggregated task")

    asyncio.run(main())
    assert handler.meta == [("agg-opt", 3)]


def test_the_aggregated_task_can_be_scheduled(redis_url, r):
    enqueue_group(redis_url, "later", [b"x"])
    r.zadd(keys.group_key(Q, "later"), {r.zrange(keys.group_key(Q, "later"), 0, 0)[0]: 0}, xx=True)

    later = lambda g, ts: (joined(g, ts), {"process_in": 3600, "task_id": "sched"})  # noqa: E731
    assert run_aggregator_once(redis_url, later) == (1, 1)
    assert r.hget(keys.task_key(Q, "sched"), "state") == b"scheduled"
    assert abs(r.zscore(keys.scheduled_key(Q), "sched") - (time.time() + 3600)) < 5
    assert r.zcard(SETS) == 0 and r.zcard(keys.group_key(Q, "later")) == 0


def test_a_unique_aggregated_task_takes_the_lock_and_a_duplicate_keeps_its_set(redis_url, r):
    enqueue_group(redis_url, "u1", [b"x"], task_id="m1")
    r.zadd(keys.group_key(Q, "u1"), {"m1": 0}, xx=True)
    same = lambda g, ts: (fastq.Task("report", b"same"), {"unique": 60, "task_id": f"agg-{g}"})  # noqa: E731
    assert run_aggregator_once(redis_url, same) == (1, 1)
    lock = keys.unique_key(Q, "report", b"same")
    assert r.get(lock) == b"agg-u1" and r.hget(keys.task_key(Q, "agg-u1"), "unique_key") == lock.encode()
    enqueue_group(redis_url, "u2", [b"y"], task_id="m2")
    r.zadd(keys.group_key(Q, "u2"), {"m2": 0}, xx=True)
    assert run_aggregator_once(redis_url, same) == (1, 0)  # duplicate: nothing enqueued, set kept
    assert not r.exists(keys.task_key(Q, "agg-u2")) and r.hget(keys.task_key(Q, "m2"), "state") == b"aggregating"
    assert r.zcard(SETS) == 1 and r.get(lock) == b"agg-u1"


def test_an_aggregated_task_can_join_another_group(redis_url, r):
    enqueue_group(redis_url, "level1", [b"x"], task_id="m1")
    r.zadd(keys.group_key(Q, "level1"), {"m1": 0}, xx=True)
    up = lambda g, ts: (fastq.Task("rollup", b"1"), {"group": "level2", "task_id": "agg"})  # noqa: E731
    assert run_aggregator_once(redis_url, up) == (1, 1)
    assert r.hgetall(keys.task_key(Q, "agg"))[b"state"] == b"aggregating"
    assert r.hget(keys.task_key(Q, "agg"), "group") == b"level2"
    assert r.zrange(keys.group_key(Q, "level2"), 0, -1) == [b"agg"] and r.smembers(GROUPS) == {b"level2"}


@pytest.mark.parametrize("result, error, words", [
    (None, TypeError, "must return a fastq.Task"),
    ("batch", TypeError, "must return a fastq.Task"),
    ((fastq.Task("b"), ["max_retry", 3]), TypeError, "not a dict"),
    ((fastq.Task("b"), {"queue": "elsewhere"}), InvalidOptionError, "option 'queue'"),
    ((fastq.Task("b"), {"max_retry": -1}), InvalidOptionError, "option 'max_retry'"),
    ((fastq.Task("b"), {"retries": 3}), TypeError, "unknown enqueue option 'retries'"),
])
def test_a_bad_aggregator_result_is_a_typed_error(result, error, words):
    with pytest.raises(error, match=words):
        aggregated_plan(Q, result)


def test_the_client_payload_limit_does_not_apply_to_an_aggregated_task():
    """1 MiB is a producer-side guard (Client(max_payload_bytes=...)); Go's aggregator has none."""
    plan = aggregated_plan(Q, fastq.Task("b", b"x" * (3 * 1024 * 1024)))
    assert len(plan.msg.payload) == 3 * 1024 * 1024


def test_a_group_over_1_mib_is_aggregated_whole_into_one_task(redis_url, r):
    """20 members of 60 KiB (1.17 MiB together): one aggregated task, run by a handler, nothing left."""
    payloads = [bytes([65 + i]) * (60 * 1024) for i in range(20)]
    enqueue_group(redis_url, "big", payloads)
    received: list[bytes] = []

    async def handler(task: fastq.Task) -> None:
        received.append(task.payload)

    async def main():
        async with RunningWorker(handler, redis_url, group_aggregator=joined, group_grace_period=1):
            await async_wait_for(lambda: received, timeout=8, what="aggregated task")
            await asyncio.sleep(0.3)  # no second task, no retry

    asyncio.run(main())
    (payload,) = received
    assert len(payload) > 1024 * 1024
    group, _, items = payload.partition(b"=")
    assert group == b"big" and sorted(items.split(b",")) == payloads  # every member, whole (same-second: ID order)
    assert r.zcard(keys.group_key(Q, "big")) == 0 and r.zcard(SETS) == 0 and not r.smembers(GROUPS)
    assert left_over(r) == []


def test_a_bad_aggregator_result_writes_nothing_and_keeps_the_set(redis_url, r, caplog):
    enqueue_group(redis_url, "bad", [b"x"], task_id="kept")
    r.zadd(keys.group_key(Q, "bad"), {"kept": 0}, xx=True)

    elsewhere = lambda g, ts: (joined(g, ts), {"queue": "elsewhere"})  # noqa: E731
    with caplog.at_level(logging.ERROR, logger="fastq.aggregator"):
        assert run_aggregator_once(redis_url, elsewhere) == (1, 0)
    assert "option 'queue'" in caplog.text
    (set_key,) = r.zrange(SETS, 0, -1)
    assert r.zrange(set_key, 0, -1) == [b"kept"] and r.hget(keys.task_key(Q, "kept"), "state") == b"aggregating"
    assert r.llen(keys.pending_key(Q)) == 0 and not r.keys("asynq:{elsewhere}:*")


def test_an_aggregated_task_whose_id_exists_keeps_the_set(redis_url, r):
    with fastq.Client(redis_url) as client:
        client.enqueue(fastq.Task("other"), task_id="taken")
    enqueue_group(redis_url, "dup", [b"x"], task_id="member")
    r.zadd(keys.group_key(Q, "dup"), {"member": 0}, xx=True)

    taken = lambda g, ts: (joined(g, ts), {"task_id": "taken"})  # noqa: E731
    assert run_aggregator_once(redis_url, taken) == (1, 0)
    assert r.llen(keys.pending_key(Q)) == 1  # only the first "taken"
    assert r.hget(keys.task_key(Q, "member"), "state") == b"aggregating" and r.zcard(SETS) == 1


# ----------------------------------------------------------------- configuration

@pytest.mark.parametrize("option, value, words", [
    ("group_aggregator", "myapp:aggregate", "group_aggregator must be a callable"),
    ("group_grace_period", 0.5, "group_grace_period must be at least 1 second"),
    ("group_grace_period", 0, "group_grace_period must be at least 1 second"),
    ("group_grace_period", -5, "group_grace_period must be at least 0"),
    ("group_grace_period", "60", "group_grace_period must be a number"),
    ("group_grace_period", float("nan"), "group_grace_period"),
    ("group_grace_period", float("inf"), "group_grace_period"),
    ("group_max_delay", 0.5, "group_max_delay must be 0 \\(no limit\\) or at least 1 second"),
    ("group_max_delay", -1, "group_max_delay"),
    ("group_max_delay", None, "group_max_delay must be a number"),
    ("group_max_size", -1, "group_max_size must be at least 0"),
    ("group_max_size", 2.5, "group_max_size must be an integer"),
    ("group_max_size", True, "group_max_size must be a number"),
])
def test_bad_group_settings_raise_invalid_option_error(option, value, words):
    with pytest.raises(InvalidOptionError, match=words):
        fastq.WorkerConfig(**{option: value})


def test_group_settings_accept_timedelta():
    cfg = fastq.WorkerConfig(group_grace_period=timedelta(seconds=5), group_max_delay=timedelta(minutes=1),
                             group_max_size=50, group_aggregator=joined)
    assert (cfg.group_grace_period, cfg.group_max_delay, cfg.group_max_size) == (5.0, 60.0, 50)


# ----------------------------------------------------------------- fastq-supervisor

SUPERVISED_APP = '''
import fastq
mux = fastq.ServeMux()

@mux.handle("batch")
async def batch(task):
    pass

def aggregate(group, tasks):
    payload = group.encode() + b"=" + b",".join(sorted(t.payload for t in tasks))
    return fastq.Task("batch", payload), {"retention": 60, "task_id": "agg-" + group}

not_callable = 42
'''


def supervisor(tmp_path, redis_url, *args):
    import subprocess
    import sys

    (tmp_path / "agg_app.py").write_text(SUPERVISED_APP)
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", "agg_app:mux", "--redis-url", redis_url, "--processes", "1",
           *args]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_fastq_supervisor_runs_the_group_aggregator(tmp_path, redis_url, r):
    import signal

    from helpers import wait_for

    enqueue_group(redis_url, "sup", [b"a", b"b", b"c"])
    proc = supervisor(tmp_path, redis_url, "--group-aggregator", "agg_app:aggregate", "--group-grace-period", "1")
    try:
        wait_for(lambda: r.zscore(keys.completed_key(Q), "agg-sup"), timeout=20, what="aggregated task completed")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    msg = decode_message(r.hget(keys.task_key(Q, "agg-sup"), "msg"))
    assert (msg.type, msg.payload, msg.retention) == ("batch", b"sup=a,b,c", 60)
    assert r.zcard(keys.group_key(Q, "sup")) == 0 and r.zcard(SETS) == 0


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--group-aggregator", "agg_app:not_callable"], "not a ServeMux or a handler callable"),
    (["--group-aggregator", "no_such_module:f"], "cannot import module 'no_such_module'"),
    (["--group-grace-period", "0.5"], "group_grace_period must be at least 1 second"),
    (["--group-grace-period", "soon"], "expected a number of seconds"),
    (["--group-max-delay", "0.2"], "group_max_delay must be 0 (no limit) or at least 1 second"),
    (["--group-max-size", "-3"], "Invalid value for '--group-max-size': must be at least 0, got -3"),
])
def test_fastq_supervisor_rejects_bad_group_flags(tmp_path, redis_url, r, args, message):
    proc = supervisor(tmp_path, redis_url, *args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert message in err and "Traceback" not in err
    assert r.dbsize() == 0  # nothing written


# ----------------------------------------------------------------- Redis Cluster

@pytest.mark.slow
def test_groups_missing_from_the_groups_set_are_found_on_every_master_of_a_cluster(tmp_path):
    """Each queue is swept on the master owning its slot (SCAN is per node): orphaned groups of
    queues on three masters are all found and aggregated, with no CROSSSLOT error anywhere."""
    from redis.cluster import RedisCluster
    from redis.crc import key_slot
    from topology import Cluster

    cluster = Cluster(tmp_path, masters=3).start()
    try:
        queues, nodes = [], set()
        for i in range(1000):
            port = cluster.node_of_slot(key_slot(keys.pending_key(f"q{i}").encode())).port
            if port not in nodes:
                queues.append(f"q{i}")
                nodes.add(port)
            if len(queues) == 3:
                break
        rc = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        now = int(time.time()) - 5
        for q in queues:
            for group in (b"lost", b"\xfe" + q.encode()):
                tid = f"{q}-{group.hex()}"
                add_go_style(rc, group, tid, item_msg(tid, q.encode(), queue=q), now, queue=q, listed=False)
        rc.close()
        cluster.reset_error_stats()
        handler = RawBatches()

        async def main():
            async with RunningWorker(handler, cluster.url, queues={q: 1 for q in queues},
                                     group_aggregator=raw_joined, group_grace_period=1):
                await async_wait_for(lambda: len(handler.payloads) >= 6, timeout=15, what="six aggregated tasks")

        asyncio.run(main())
        assert sorted(handler.payloads) == sorted(
            g + b"=" + q.encode() for q in queues for g in (b"lost", b"\xfe" + q.encode()))
        assert cluster.error_stats().get("CROSSSLOT", 0) == 0
    finally:
        cluster.stop()
