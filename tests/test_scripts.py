"""Each Lua script, seeded and checked key by key against the Asynq layout (spec sections 2-5)."""
from __future__ import annotations

import time

import pytest
from helpers import dump

from fastq import keys
from fastq._codec import TaskMessage, decode_message, encode_message
from fastq._rdb import scripts as _scripts
from fastq._rdb.calls import execute
from fastq._rdb.outcome import Archive, Complete, Done, Requeue, Retry
from fastq._rdb.worker import Broker, settle_calls, utc_date

Q = "default"
MAX_INT64 = "9223372036854775807"


def msg(tid: str, q: str = Q, **kw) -> bytes:
    return encode_message(TaskMessage(type="t", id=tid, queue=q, retry=25, timeout=1800, **kw))


def seed_pending(r, q: str, *ids: str) -> None:
    for tid in ids:
        r.hset(keys.task_key(q, tid), mapping={"msg": msg(tid, q), "state": "pending", "pending_since": 1})
        r.lpush(keys.pending_key(q), tid)


def seed_active(r, q: str, *ids: str, token: str = "tok", **msg_kw) -> None:
    for tid in ids:
        r.hset(keys.task_key(q, tid), mapping={"msg": msg(tid, q, **msg_kw), "state": "active", "lease_token": token})
        r.lpush(keys.active_key(q), tid)
        r.zadd(keys.lease_key(q), {tid: int(time.time()) + 30})


def dequeue(r, queues, n, lease=30, token="tok"):
    dkeys = [k for q in queues
             for k in (keys.pending_key(q), keys.paused_key(q), keys.active_key(q), keys.lease_key(q),
                       keys.flow_links_key(q))]
    return _scripts.DEQUEUE.run(r, dkeys, [n, lease, token, *[keys.task_key_prefix(q) for q in queues]])


def server_time(r) -> int:
    return r.time()[0]


def test_dequeue_takes_a_batch_from_the_first_ready_queue(r):
    seed_pending(r, "paused", "p1")
    r.set(keys.paused_key("paused"), 1)
    seed_pending(r, "low", "a", "b", "c", "d", "e")
    reply = dequeue(r, ["paused", "empty", "low"], 3, lease=30)
    now = server_time(r)
    assert reply[0] == 3 and abs(reply[1] - (now + 30)) <= 1
    assert reply[2] == []  # no workflow steps among them
    ids = [x.decode() for x in reply[3::2]]
    assert ids == ["a", "b", "c"]  # oldest first (FIFO)
    assert [decode_message(m).id for m in reply[4::2]] == ids
    assert r.lrange(keys.pending_key("low"), 0, -1) == [b"e", b"d"]
    # the same list as three RPOPLPUSH calls would leave
    assert r.lrange(keys.active_key("low"), 0, -1) == [b"c", b"b", b"a"]
    leases = dict(r.zrange(keys.lease_key("low"), 0, -1, withscores=True))
    assert leases == {b"a": reply[1], b"b": reply[1], b"c": reply[1]}
    for tid in ids:
        fields = r.hgetall(keys.task_key("low", tid))
        assert fields[b"state"] == b"active" and b"pending_since" not in fields
        assert fields[b"lease_token"] == b"tok"
    assert r.llen(keys.pending_key("paused")) == 1  # paused queue untouched


def test_dequeue_returns_empty_when_nothing_ready(r):
    seed_pending(r, "paused", "p1")
    r.set(keys.paused_key("paused"), 1)
    assert dequeue(r, ["paused", "empty"], 10) == []


def test_dequeue_reports_a_missing_message(r):
    r.lpush(keys.pending_key(Q), "ghost")
    reply = dequeue(r, [Q], 5)
    assert reply[2:] == [[], b"ghost", None]


def test_dequeue_returns_the_workflow_link_of_steps_only(r):
    seed_pending(r, Q, "a", "b", "c")
    r.hset(keys.flow_links_key(Q), mapping={"b": b'{"k":"chain"}', "zz": b"not dequeued"})
    reply = dequeue(r, [Q], 3)
    assert [x.decode() for x in reply[3::2]] == ["a", "b", "c"]
    assert reply[2] == [2, b'{"k":"chain"}']  # 1-based position of "b", its link as stored


def test_dequeue_more_than_unpack_limit(r):
    ids = [f"t{i}" for i in range(1200)]
    pipe = r.pipeline()
    for tid in ids:
        pipe.hset(keys.task_key(Q, tid), mapping={"msg": msg(tid), "state": "pending"})
    pipe.lpush(keys.pending_key(Q), *ids)
    pipe.execute()
    reply = dequeue(r, [Q], 1100)
    assert len(reply[3::2]) == 1100
    assert r.llen(keys.active_key(Q)) == 1100 and r.zcard(keys.lease_key(Q)) == 1100


def ack(r, outcomes, cutoff=""):
    replies = execute(r, settle_calls(outcomes, time.time(), cutoff))
    return [x.decode() for reply in replies for x in reply]


def test_done_deletes_counts_and_releases_own_lock(r):
    seed_active(r, Q, "a", "b")
    r.set("asynq:{default}:unique:t:x", "a")
    r.set("asynq:{default}:unique:t:y", "someone-else")
    missing = ack(r, [Done(Q, "a", "tok", "asynq:{default}:unique:t:x"),
                      Done(Q, "b", "tok", "asynq:{default}:unique:t:y"), Done(Q, "gone", "tok", "")])
    assert missing == ["gone"]
    state = dump(r)
    today = keys.processed_key(Q, utc_date(time.time()))
    assert set(state) == {today, keys.processed_total_key(Q), "asynq:{default}:unique:t:y"}
    assert state[today]["value"] == b"2" and state[today]["ttl"]
    assert 89 * 86400 < r.ttl(today) <= 90 * 86400
    assert state[keys.processed_total_key(Q)] == {"type": "string", "ttl": False, "value": b"2"}


def test_total_counter_wraps_at_max_int64_like_asynq(r):
    seed_active(r, Q, "a", "b")
    r.set(keys.processed_total_key(Q), MAX_INT64)
    ack(r, [Done(Q, "a", "tok", ""), Done(Q, "b", "tok", "")])
    assert r.get(keys.processed_total_key(Q)) == b"2"  # MaxInt64 -> 1 -> 2


def test_complete_keeps_result_and_scores_expiry(r):
    seed_active(r, Q, "c", retention=60)
    r.hset(keys.task_key(Q, "c"), "result", b"42")
    done = TaskMessage(type="t", id="c", queue=Q, retention=60, completed_at=1000)
    assert ack(r, [Complete(Q, "c", "tok", 1060, done, "", None)]) == []
    fields = r.hgetall(keys.task_key(Q, "c"))
    assert fields[b"state"] == b"completed" and fields[b"result"] == b"42"
    assert b"lease_token" not in fields  # fastq's fencing field leaves with the lease
    assert decode_message(fields[b"msg"]).completed_at == 1000
    assert r.zscore(keys.completed_key(Q), "c") == 1060
    assert not r.llen(keys.active_key(Q)) and not r.zcard(keys.lease_key(Q))


def test_complete_stores_a_returned_result(r):
    seed_active(r, Q, "c", retention=60)
    done = TaskMessage(type="t", id="c", queue=Q, retention=60, completed_at=1000)
    ack(r, [Complete(Q, "c", "tok", 1060, done, "", b"")])  # an empty result is still a result
    assert r.hget(keys.task_key(Q, "c"), "result") == b""
    seed_active(r, Q, "d", retention=60)
    ack(r, [Complete(Q, "d", "tok", 1060, done, "", b"\x00bytes")])
    assert r.hget(keys.task_key(Q, "d"), "result") == b"\x00bytes"


def test_write_result_never_creates_an_orphan_hash(r):
    assert _scripts.WRITE_RESULT.run(r, [keys.task_key(Q, "gone")], [b"x"]) == 0
    assert not r.exists(keys.task_key(Q, "gone"))


def test_retry_counts_only_failures(r):
    seed_active(r, Q, "f", "n")
    failed = TaskMessage(type="t", id="f", queue=Q, retried=1, error_msg="x")
    quiet = TaskMessage(type="t", id="n", queue=Q, error_msg="y")
    ack(r, [Retry(Q, "f", "tok", failed, 5000, True), Retry(Q, "n", "tok", quiet, 6000, False)])
    assert dict(r.zrange(keys.retry_key(Q), 0, -1, withscores=True)) == {b"f": 5000, b"n": 6000}
    assert r.hget(keys.task_key(Q, "f"), "state") == b"retry"
    assert decode_message(r.hget(keys.task_key(Q, "f"), "msg")).retried == 1
    date = utc_date(time.time())
    for key in (keys.processed_key(Q, date), keys.failed_key(Q, date), keys.processed_total_key(Q),
                keys.failed_total_key(Q)):
        assert r.get(key) == b"1"


def test_archive_trims_by_age_and_size_deleting_hashes(r):
    now = int(time.time())
    old_age = now - 91 * 86400
    r.zadd(keys.archived_key(Q), {"ancient": old_age, "old1": now - 10, "old2": now - 5})
    for tid in ("ancient", "old1", "old2"):
        r.hset(keys.task_key(Q, tid), mapping={"msg": msg(tid), "state": "archived"})
    seed_active(r, Q, "new")
    items = [Archive(Q, "new", "tok", TaskMessage(type="t", id="new", queue=Q, error_msg="boom"))]
    (call,) = settle_calls(items, now)
    call.args[1][5] = 3  # max size 3: keeps the newest 2 after adding, as Asynq's ZRANGE 0 -max does
    execute(r, [call])
    assert r.zrange(keys.archived_key(Q), 0, -1) == [b"old2", b"new"]
    assert not r.exists(keys.task_key(Q, "ancient")) and not r.exists(keys.task_key(Q, "old1"))
    assert r.hget(keys.task_key(Q, "new"), "state") == b"archived"
    assert r.get(keys.failed_total_key(Q)) == b"1"


def test_requeue_pushes_to_the_dequeue_end(r):
    seed_pending(r, Q, "waiting")
    seed_active(r, Q, "running")
    assert ack(r, [Requeue(Q, "running", "tok"), Requeue(Q, "not-active", "tok")]) == ["not-active"]
    assert r.lrange(keys.pending_key(Q), 0, -1) == [b"waiting", b"running"]
    fields = r.hgetall(keys.task_key(Q, "running"))
    assert fields[b"state"] == b"pending" and b"pending_since" not in fields and b"lease_token" not in fields
    assert r.get(keys.processed_total_key(Q)) is None


def test_outcome_for_task_no_longer_active_is_not_written(r):
    r.hset(keys.task_key(Q, "moved"), mapping={"msg": msg("moved"), "state": "retry"})
    r.zadd(keys.retry_key(Q), {"moved": 1})
    assert ack(r, [Done(Q, "moved", "", "")]) == ["moved"]
    assert r.hget(keys.task_key(Q, "moved"), "state") == b"retry"


def test_forward_moves_due_tasks_and_regroups(r):
    now = int(time.time())
    for tid, score in (("due", now - 1), ("later", now + 100), ("grouped", now - 1)):
        r.hset(keys.task_key(Q, tid), mapping={"msg": msg(tid), "state": "scheduled"})
        r.zadd(keys.scheduled_key(Q), {tid: score})
    r.hset(keys.task_key(Q, "grouped"), "group", "g1")
    moved = _scripts.FORWARD.run(r, [keys.scheduled_key(Q), keys.pending_key(Q), keys.groups_key(Q)],
                                 [keys.task_key_prefix(Q), keys.group_key_prefix(Q), 100])
    assert moved == 2
    assert r.zrange(keys.scheduled_key(Q), 0, -1) == [b"later"]
    assert r.lrange(keys.pending_key(Q), 0, -1) == [b"due"]
    due = r.hgetall(keys.task_key(Q, "due"))
    assert due[b"state"] == b"pending" and int(due[b"pending_since"]) > 10**18
    assert abs(r.zscore(keys.group_key(Q, "g1"), "grouped") - server_time(r)) <= 1
    assert r.hget(keys.task_key(Q, "grouped"), "state") == b"aggregating"
    assert r.smembers(keys.groups_key(Q)) == {b"g1"}


def test_forward_in_batches(r, redis_url):
    now = int(time.time())
    for i in range(250):
        r.hset(keys.task_key(Q, f"s{i}"), mapping={"msg": msg(f"s{i}"), "state": "retry"})
        r.zadd(keys.retry_key(Q), {f"s{i}": now - 5})
    import asyncio

    import redis.asyncio as aredis

    async def main():
        client = aredis.Redis.from_url(redis_url)
        try:
            return await Broker(client).forward([Q], batch=100)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == 250
    assert r.llen(keys.pending_key(Q)) == 250 and r.zcard(keys.retry_key(Q)) == 0


def test_extend_lease_never_creates_or_shortens(r):
    far = server_time(r) + 1000
    r.zadd(keys.lease_key(Q), {"short": 1, "long": far})
    expiry = _scripts.EXTEND_LEASE.run(r, [keys.lease_key(Q)], [30, "short", "long", "unknown"])
    assert abs(expiry - (server_time(r) + 30)) <= 1
    assert dict(r.zrange(keys.lease_key(Q), 0, -1, withscores=True)) == {b"short": expiry, b"long": far}


def test_list_lease_expired(r):
    now = server_time(r)
    r.zadd(keys.lease_key(Q), {"old": now - 100, "fresh": now + 30, "nohash": now - 100})
    r.hset(keys.task_key(Q, "old"), "msg", msg("old"))
    r.hset(keys.flow_links_key(Q), "old", b"{}")
    reply = _scripts.LIST_LEASE_EXPIRED.run(r, [keys.lease_key(Q), keys.flow_links_key(Q)],
                                            [0, keys.task_key_prefix(Q), 100])
    assert abs(reply[0] - now) <= 1
    found = {reply[i]: (reply[i + 1], reply[i + 2]) for i in range(1, len(reply), 3)}
    assert set(found) == {b"old", b"nohash"}  # a hashless ID comes with an empty message, to be archived
    assert decode_message(found[b"old"][0]).id == "old" and found[b"nohash"] == (b"", b"")
    assert found[b"old"][1] == b"{}"  # a workflow step's link comes along
    assert _scripts.LIST_LEASE_EXPIRED.run(r, [keys.lease_key(Q), keys.flow_links_key(Q)],
                                           [200, keys.task_key_prefix(Q), 100])[1:] == []


def test_stale_lease_token_cannot_settle(r):
    """Fencing: a worker whose claim was reclaimed and claimed again cannot complete the task."""
    seed_active(r, Q, "t1", token="new-owner")
    assert ack(r, [Done(Q, "t1", "old-owner", "")]) == ["t1"]
    assert r.hget(keys.task_key(Q, "t1"), "state") == b"active"
    assert r.lrange(keys.active_key(Q), 0, -1) == [b"t1"] and r.zscore(keys.lease_key(Q), "t1")
    assert ack(r, [Done(Q, "t1", "new-owner", "")]) == []
    assert not r.exists(keys.task_key(Q, "t1"))


def test_done_and_requeue_more_than_one_bulk_slice(r):
    """The leases, hashes and requeued IDs go to Redis 500 per command: 1,200 in one call each."""
    done_ids, back_ids = [f"d{i}" for i in range(1200)], [f"b{i}" for i in range(1200)]
    pipe = r.pipeline()
    for tid in done_ids + back_ids:
        pipe.hset(keys.task_key(Q, tid), mapping={"msg": msg(tid), "state": "active", "lease_token": "tok"})
        pipe.zadd(keys.lease_key(Q), {tid: int(time.time()) + 30})
    pipe.lpush(keys.active_key(Q), *done_ids, *back_ids)
    pipe.execute()
    assert ack(r, [Done(Q, tid, "tok") for tid in done_ids]) == []
    assert ack(r, [Requeue(Q, tid, "tok") for tid in back_ids]) == []
    assert not any(r.exists(keys.task_key(Q, tid)) for tid in done_ids)
    assert r.get(keys.processed_total_key(Q)) == b"1200"
    assert r.llen(keys.active_key(Q)) == 0 and r.zcard(keys.lease_key(Q)) == 0
    assert r.lrange(keys.pending_key(Q), 0, -1) == [tid.encode() for tid in back_ids]  # in order, as RPUSH each
    assert r.hgetall(keys.task_key(Q, "b7"))[b"state"] == b"pending"


def test_done_batch_mixes_tokens_locks_and_repeats(r):
    """One done call: runs of tokens and unique keys (grouped arguments), a stale token between
    them, an ID given twice; each task is judged on its own token, as one by one."""
    seed_active(r, Q, "a1", "a2", "u1", token="claim-a")
    seed_active(r, Q, "b1", "b2", token="claim-b")
    r.set("asynq:{default}:unique:t:u1", "u1")
    items = [Done(Q, "a1", "claim-a"), Done(Q, "a2", "claim-a"),
             Done(Q, "u1", "claim-a", "asynq:{default}:unique:t:u1"), Done(Q, "b1", "stale"),
             Done(Q, "b2", "claim-b"), Done(Q, "a1", "claim-a"), Done(Q, "b1", "claim-b")]
    calls = settle_calls(items, time.time())
    assert len(calls[0].args[1]) == 3 + 6 * 3 + len(items)  # 6 groups of (token, key, n), one argument per task
    assert ack(r, items) == ["b1", "a1"]  # the stale claim, and the repeat of a1
    assert r.lrange(keys.active_key(Q), 0, -1) == [] and r.zcard(keys.lease_key(Q)) == 0
    assert not any(r.exists(keys.task_key(Q, tid)) for tid in ("a1", "a2", "u1", "b1", "b2"))
    assert not r.exists("asynq:{default}:unique:t:u1")
    assert r.get(keys.processed_total_key(Q)) == b"5"


def test_recovery_cutoff_spares_an_extended_lease(r):
    seed_active(r, Q, "expired", "extended")
    now = server_time(r)
    r.zadd(keys.lease_key(Q), {"expired": now - 10, "extended": now + 8})
    items = [Retry(Q, tid, "", TaskMessage(type="t", id=tid, queue=Q, retried=1), now, True)
             for tid in ("expired", "extended")]
    assert ack(r, items, cutoff=str(now - 5)) == ["extended"]
    assert r.hget(keys.task_key(Q, "expired"), "state") == b"retry"
    assert r.hget(keys.task_key(Q, "extended"), "state") == b"active"


def test_enqueue_batch_skips_existing_ids(r):
    r.hset(keys.task_key(Q, "b"), mapping={"msg": msg("b"), "state": "archived"})
    reply = _scripts.ENQUEUE_BATCH.run(r, [keys.pending_key(Q), keys.task_key(Q, "a"), keys.task_key(Q, "b"),
                                           keys.task_key(Q, "c")],
                                       [123, "a", msg("a"), "b", msg("b"), "c", msg("c")])
    assert reply == [2]
    assert r.lrange(keys.pending_key(Q), 0, -1) == [b"c", b"a"]
    assert r.hget(keys.task_key(Q, "b"), "state") == b"archived"
    assert r.hget(keys.task_key(Q, "a"), "pending_since") == b"123"


@pytest.mark.parametrize("name", sorted(_scripts.SCRIPTS))
def test_every_script_documents_its_keys(name):
    """Each .lua file starts with a header naming its KEYS and ARGV (style rule)."""
    from importlib import resources

    text = resources.files("fastq").joinpath("lua", f"{name}.lua").read_text()
    header = "".join(line for line in text.splitlines(True) if line.startswith("--"))
    assert "KEYS[1]" in header and "ARGV[" in header and "Returns" in header


def test_script_sources_and_shas_for_new_and_old_servers(r, monkeypatch):
    """A script's source is ``_lib.lua`` then its body, after its ``#!lua`` line if it has one; the
    plain form (Redis < 7 refuses shebangs) drops that line; each SHA is the SHA1 of its source, as
    Redis computes it on SCRIPT LOAD."""
    import hashlib

    monkeypatch.setattr(_scripts.Script, "plain_only", False)
    lib = _scripts._read("_lib.lua")
    done = _scripts.DONE
    assert done.source.startswith("#!lua flags=allow-oom\n" + lib)  # settling runs under maxmemory
    assert done.sha == hashlib.sha1(done.source.encode()).hexdigest() == r.script_load(done.source)
    assert not _scripts.ENQUEUE.source.startswith("#!")  # enqueueing is refused under maxmemory
    assert _scripts.ENQUEUE.source.startswith(lib)
    assert not _scripts.Script.load_refused(Exception("ERR Error compiling script"))
    assert _scripts.Script.load_refused(Exception("ERR Unknown lua shebang option"))
    assert _scripts.Script.plain_only and not done.source.startswith("#!")
    assert done.source == lib + "\n" + _scripts._read("done.lua").split("\n", 1)[1]
    assert done.sha == hashlib.sha1(done.source.encode()).hexdigest() == r.script_load(done.source)
    assert not _scripts.Script.load_refused(Exception("ERR Unknown lua shebang option"))  # once only
