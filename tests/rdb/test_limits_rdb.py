"""fastq._rdb.limits against a real Redis: admission (limit_admit.lua), slot release with the
outcome (limit_release.lua), slot extension and the precise forward, key by key."""
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
from fastq._rdb import limits as L
from fastq._rdb.calls import aexecute
from fastq._rdb.outcome import Done, Retry
from fastq._rdb.worker import Broker


def drop(r: redis.Redis, queue: str) -> None:
    found = list(r.scan_iter(match=f"asynq:{{{queue}}}:*"))
    if found:
        r.delete(*found)


@pytest.fixture
def q(r: redis.Redis):
    name = f"rdb-limits-{uuid.uuid4().hex[:8]}"
    yield name
    drop(r, name)


def run(redis_url: str, fn: Any) -> Any:
    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def seed(r: redis.Redis, q: str, *ids: str, retried: int = 2) -> None:
    for tid in ids:
        m = TaskMessage(type="lim", id=tid, queue=q, retry=5, retried=retried, timeout=1800)
        r.hset(keys.task_key(q, tid), mapping={"msg": encode_message(m), "state": "pending"})
        r.lpush(keys.pending_key(q), tid)


def claim_all(redis_url: str, q: str, n: int, token: str = "w:1") -> list[str]:
    async def go(client: Any) -> list[str]:
        return [c.raw_id.decode() for c in await Broker(client).dequeue([q], n, 30, token)]

    return run(redis_url, go)


def admit(redis_url: str, q: str, asks: list[L.Ask], token: str = "w:1", backoff: float = 5.0) -> list[int]:
    return run(redis_url, lambda c: L.admit(c, q, token, asks, backoff))


def test_a_rate_admits_one_per_interval_and_schedules_the_rest_with_their_reserved_slot(r, redis_url, q):
    ids = [f"t{i}" for i in range(5)]
    seed(r, q, *ids)
    assert claim_all(redis_url, q, 5) == ids
    before = time.time()
    rate = keys.rate_key(q, "lim")
    statuses = admit(redis_url, q, [L.Ask(tid, rate_key=rate, interval=1.0) for tid in ids])
    assert statuses == [1, 0, 0, 0, 0]
    assert r.lrange(keys.active_key(q), 0, -1) == [b"t0"]
    assert [m for m, _ in r.zrange(keys.lease_key(q), 0, -1, withscores=True)] == [b"t0"]
    sched = r.zrange(keys.scheduled_key(q), 0, -1, withscores=True)
    assert [m for m, _ in sched] == [b"t1", b"t2", b"t3", b"t4"]
    for i, (_, score) in enumerate(sched, start=1):  # the reserved slots, one interval apart
        assert before + i - 0.5 < score < before + i + 0.5
    for tid in ids[1:]:
        h = r.hgetall(keys.task_key(q, tid))
        assert h[b"state"] == b"scheduled" and b"lease_token" not in h
        assert decode_message(h[b"msg"]).retried == 2  # not a retry: the message is untouched
        assert b"fastq_rate_at" in h
    tat = float(r.get(rate))
    assert before + 4.5 < tat < before + 5.5 and 0 < r.pttl(rate) <= 6000


def test_a_reserved_task_is_admitted_when_it_comes_back_and_the_precise_forward_brings_it(r, redis_url, q):
    seed(r, q, "a", "b")
    claim_all(redis_url, q, 2)
    rate = keys.rate_key(q, "lim")
    assert admit(redis_url, q, [L.Ask(t, rate_key=rate, interval=0.3) for t in ("a", "b")]) == [1, 0]
    assert forward(redis_url, q) == 0  # not due yet (0.3 s ahead)
    time.sleep(0.35)
    assert forward(redis_url, q) == 1  # due by the microsecond, not the second
    assert r.hget(keys.task_key(q, "b"), "state") == b"pending"
    claim_all(redis_url, q, 1, token="w:2")
    # its slot was reserved: admitted now even though the TAT is ahead of the clock
    assert admit(redis_url, q, [L.Ask("b", rate_key=rate, interval=100.0)], token="w:2") == [1]
    assert not r.hexists(keys.task_key(q, "b"), "fastq_rate_at")


def forward(redis_url: str, q: str) -> int:
    async def go(client: Any) -> int:
        (moved,) = await aexecute(client, L.forward_calls([q], 100))
        return int(moved)

    return run(redis_url, go)


def test_concurrency_slots_are_leased_released_with_the_outcome_and_wake_the_oldest_waiter(r, redis_url, q):
    ids = ["a", "b", "c", "d"]
    seed(r, q, *ids)
    claim_all(redis_url, q, 4)
    sk, wk = keys.slots_key(q, "lim", "cust1"), keys.slot_waiters_key(q, "lim", "cust1")
    asks = [L.Ask(t, slots_key=sk, waiters_key=wk, limit=2) for t in ids]
    assert admit(redis_url, q, asks) == [1, 1, 0, 0]
    slots = dict(r.zrange(sk, 0, -1, withscores=True))
    assert set(slots) == {b"a", b"b"}
    assert slots[b"a"] == r.zscore(keys.lease_key(q), "a")  # a slot expires with its task's lease
    assert r.zrange(wk, 0, -1) == [b"c", b"d"]
    assert r.hget(keys.task_key(q, "c"), "state") == b"scheduled"
    assert decode_message(r.hget(keys.task_key(q, "c"), "msg")).retried == 2

    held = L.Slot(q, "a", "w:1", sk, wk)

    async def settle(client: Any) -> list[bytes]:
        return await L.settle_with_release(client, [Done(q, "a", "w:1")], [held])

    assert run(redis_url, settle) == []
    assert not r.exists(keys.task_key(q, "a"))
    assert r.zrange(sk, 0, -1) == [b"b"]
    # the oldest waiter is woken: scheduled -> pending
    assert r.zrange(wk, 0, -1) == [b"d"] and r.zscore(keys.scheduled_key(q), "c") is None
    assert r.lrange(keys.pending_key(q), 0, -1) == [b"c"]
    h = r.hgetall(keys.task_key(q, "c"))
    assert h[b"state"] == b"pending" and b"pending_since" in h
    claim_all(redis_url, q, 1, token="w:2")
    assert admit(redis_url, q, [L.Ask("c", slots_key=sk, waiters_key=wk, limit=2)], token="w:2") == [1]
    assert set(r.zrange(sk, 0, -1)) == {b"b", b"c"}


def test_a_slot_is_fenced_by_the_lease_token_and_never_counted_twice(r, redis_url, q):
    seed(r, q, "a", "b")
    claim_all(redis_url, q, 2)
    sk = keys.slots_key(q, "lim")
    assert admit(redis_url, q, [L.Ask("a", slots_key=sk, limit=1)]) == [1]
    # a lost lease: the task was recovered and claimed again under another token
    r.hset(keys.task_key(q, "a"), "lease_token", "w:9")

    async def stale(client: Any) -> list[bytes]:
        return await L.settle_with_release(client, [Retry(q, "a", "w:1", TaskMessage(type="lim", id="a"), 0)],
                                           [L.Slot(q, "a", "w:1", sk, "")])

    assert run(redis_url, stale) == [b"a"]  # outcome refused ...
    assert r.zrange(sk, 0, -1) == [b"a"]  # ... and the slot of the new run kept
    # the new run's admission finds its ID holding the slot already: it takes no second one
    assert admit(redis_url, q, [L.Ask("a", slots_key=sk, limit=1)], token="w:9") == [1]
    assert r.zcard(sk) == 1
    # a claim no longer held with the token is left alone
    assert admit(redis_url, q, [L.Ask("b", slots_key=sk, limit=1)], token="w:other") == [-1]
    assert r.lrange(keys.active_key(q), 0, -1).count(b"b") == 1


def test_expired_slots_are_dropped_and_running_slots_extended(r, redis_url, q):
    seed(r, q, "a", "b")
    claim_all(redis_url, q, 2)
    sk = keys.slots_key(q, "lim")
    r.zadd(sk, {"ghost": time.time() - 5})  # a SIGKILLed worker's slot, lease expired
    assert admit(redis_url, q, [L.Ask("a", slots_key=sk, limit=1)]) == [1]
    assert r.zrange(sk, 0, -1) == [b"a"]
    before = r.zscore(sk, "a")
    L.extend_slots(r, [L.Slot(q, "a", "w:1", sk, "")], 300)
    assert r.zscore(sk, "a") >= before + 250
    L.extend_slots(r, [L.Slot(q, "zz", "w:1", sk, "")], 300)  # never creates one
    assert r.zcard(sk) == 1


def test_a_task_waiting_for_a_slot_is_not_forwarded_early_by_a_rate(r, redis_url, q):
    """Both limits: a task over its concurrency limit does not use up a rate slot."""
    seed(r, q, "a", "b")
    claim_all(redis_url, q, 2)
    sk, rk = keys.slots_key(q, "lim"), keys.rate_key(q, "lim")
    asks = [L.Ask(t, rate_key=rk, interval=0.001, slots_key=sk, limit=1) for t in ("a", "b")]
    assert admit(redis_url, q, asks) == [1, 0]
    assert not r.hexists(keys.task_key(q, "b"), "fastq_rate_at")
    score = r.zscore(keys.scheduled_key(q), "b")
    assert 3 < score - time.time() <= 5.5  # the concurrency fallback wait, not a rate slot


def test_the_rate_tolerance_admits_a_batch_whose_slots_fall_within_it(r, redis_url, q):
    ids = [f"t{i:02}" for i in range(20)]
    seed(r, q, *ids)
    claim_all(redis_url, q, 20)
    rate = keys.rate_key(q, "lim")
    statuses = run(redis_url, lambda c: L.admit(c, q, "w:1", [L.Ask(t, rate_key=rate, interval=0.001) for t in ids],
                                                5.0, 0.01))
    admitted = statuses.count(1)
    assert 10 <= admitted <= 11 and statuses == [1] * admitted + [0] * (20 - admitted)  # 10 ms of slots, in order
    assert r.zcard(keys.scheduled_key(q)) == 20 - admitted


def test_a_reservation_long_past_its_time_is_checked_again_so_an_outage_causes_no_burst(r, redis_url, q):
    seed(r, q, "late", "fresh")
    claim_all(redis_url, q, 2)
    rate = keys.rate_key(q, "lim")
    r.set(rate, f"{time.time() + 60:.6f}")  # the rate is booked for a minute
    r.hset(keys.task_key(q, "late"), "fastq_rate_at", f"{time.time() - 30:.6f}")  # workers were down 30 s
    r.hset(keys.task_key(q, "fresh"), "fastq_rate_at", f"{time.time() - 0.5:.6f}")  # forwarded a bit late
    statuses = admit(redis_url, q, [L.Ask(t, rate_key=rate, interval=1.0) for t in ("late", "fresh")])
    assert statuses == [0, 1]
    assert r.zscore(keys.scheduled_key(q), "late") == pytest.approx(time.time() + 60, abs=2)  # a new slot
    assert not r.hexists(keys.task_key(q, "fresh"), "fastq_rate_at")


def test_waiters_further_down_the_line_wait_longer_before_they_are_checked_again(r, redis_url, q):
    """Freed slots wake waiters oldest first; the n-th waiter's own timer is backoff x (1 + n / limit),
    so a long line of waiters is not claimed and deferred again every few seconds."""
    ids = [f"w{i}" for i in range(7)]
    seed(r, q, *ids)
    claim_all(redis_url, q, 7)
    sk, wk = keys.slots_key(q, "lim"), keys.slot_waiters_key(q, "lim")
    now = time.time()
    statuses = run(redis_url, lambda c: L.admit(c, q, "w:1", [L.Ask(t, slots_key=sk, waiters_key=wk, limit=2)
                                                              for t in ids], 5.0, 0.0, 2.0, 30, 12.0))
    assert statuses == [1, 1, 0, 0, 0, 0, 0]
    waits = [r.zscore(keys.scheduled_key(q), t) - now for t in ids[2:]]
    assert waits == pytest.approx([5, 7.5, 10, 12, 12], abs=1)  # 5 x (1 + n/2), at most 12
    assert r.zrange(wk, 0, -1) == [t.encode() for t in ids[2:]]
    # a waiter that gets its slot leaves the line
    r.zrem(sk, "w0")
    r.zrem(keys.scheduled_key(q), "w2")
    r.lpush(keys.pending_key(q), "w2")
    claim_all(redis_url, q, 1, token="w:2")
    assert admit(redis_url, q, [L.Ask("w2", slots_key=sk, waiters_key=wk, limit=2)], token="w:2") == [1]
    assert b"w2" not in r.zrange(wk, 0, -1)


def test_a_woken_waiter_that_loses_the_slot_keeps_its_place_in_line(r, redis_url, q):
    seed(r, q, "holder", "first", "second")
    claim_all(redis_url, q, 3)
    sk, wk = keys.slots_key(q, "lim"), keys.slot_waiters_key(q, "lim")
    ask = lambda t: L.Ask(t, slots_key=sk, waiters_key=wk, limit=1)  # noqa: E731
    assert admit(redis_url, q, [ask("holder"), ask("first")]) == [1, 0]
    time.sleep(0.01)
    assert admit(redis_url, q, [ask("second")]) == [0]
    since = float(r.hget(keys.task_key(q, "first"), "fastq_wait_since"))
    assert r.zrange(wk, 0, -1) == [b"first", b"second"]
    # "first" is woken (popped from the line) but "holder" is still there when it is claimed
    r.zrem(wk, "first")
    r.zrem(keys.scheduled_key(q), "first")
    r.lpush(keys.pending_key(q), "first")
    claim_all(redis_url, q, 1, token="w:2")
    assert admit(redis_url, q, [ask("first")], token="w:2") == [0]
    assert r.zrange(wk, 0, -1, withscores=True)[0] == (b"first", pytest.approx(since, abs=1e-5))  # its old place
    assert r.zscore(keys.scheduled_key(q), "first") - time.time() < 6  # first in line: the short timer
