"""Inspector / AsyncInspector against a real redis-server.

Data is seeded the way Go Asynq v0.26.0 writes it (tests/golden/redis_states.json), and
expected answers are computed independently: from the golden files, or by re-doing Go's
Inspector algorithm (listMessages, memoryUsage, currentStats) with plain Redis commands.
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from datetime import datetime, timezone

import pytest
import redis
from helpers import RedisServer, dump, free_port, golden

import fastq
from fastq import _proto, keys
from fastq._codec import TaskMessage, decode_message, encode_message
from fastq._rdb import inspect_read
from fastq.errors import (
    CorruptDataError,
    InvalidOptionError,
    QueueHasActiveTasksError,
    QueueNotEmptyError,
    QueueNotFoundError,
    QueuePausedStateError,
    TaskActiveError,
    TaskAlreadyArchivedError,
    TaskAlreadyPendingError,
    TaskNotFoundError,
    TaskNotScheduledError,
)
from fastq.inspect import AsyncInspector, Inspector

STATES = {s["name"]: s for s in golden("redis_states.json")["states"]}
SERVER = golden("server_info.json")["sample_active"]
HOST_TAG = SERVER["server_key"][len("asynq:servers:"):]  # "{vm:23104:<uuid>}"
Q = "default"


# ---------------------------------------------------------------- seeding in Go's layout

def _today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def _fill(text: str) -> str:
    return text.replace("<YYYY-MM-DD>", _today()).replace("{<hostname>:<pid>:<server_id>}", HOST_TAG)


def _score(key: str, score, now: int) -> int:
    """A golden zset score: the literal if there is one, else a value that obeys its rule."""
    literal = re.match(r"^(-?\d+)", str(score))
    if literal:
        return int(literal.group(1))
    for suffix, value in ((":lease", now + 30), (":scheduled", now + 3600), (":retry", now + 3600),
                          (":completed", now + 3600), (":archived", now), ("asynq:servers", now + 10),
                          ("asynq:workers", now + 10)):
        if key.endswith(suffix):
            return value
    assert ":g:" in key, key
    return now


def _msg_bytes(field: dict, now: int) -> bytes:
    """Go's bytes; where they hold a run's timestamp, the decoded fields with that time filled in
    (fastq's encoder reproduces Go's bytes exactly: tests/test_codec.py)."""
    if field.get("hex"):
        return bytes.fromhex(field["hex"])
    d = dict(field["decoded"])
    d["payload"] = bytes.fromhex(d.pop("payload_hex"))
    for name, value in d.items():
        if isinstance(value, str) and value.startswith("<"):
            d[name] = now - 10
    return encode_message(TaskMessage(**d))


def seed_golden(r: redis.Redis, name: str, now: int | None = None) -> dict:
    """Write one golden state's keys as Go wrote them; return the state for expectations."""
    now = int(time.time()) if now is None else now
    state = STATES[name]
    for k in state["keys"]:
        key = _fill(k["key"])
        kind = k["type"]
        if kind == "set":
            r.sadd(key, *k["members"])
        elif kind == "list":
            r.rpush(key, *k["items"])  # items are as LRANGE 0 -1 shows them
        elif kind == "zset":
            r.zadd(key, {_fill(m["member"]): _score(key, m["score"], now) for m in k["members"]})
        elif kind == "string":
            value = k["value"]
            if isinstance(value, dict):
                value = bytes.fromhex(SERVER["server_info_hex"])
            elif value.startswith("<"):
                value = str(now)
            r.set(key, value)
        elif kind == "hash":
            fields = {}
            for fname, fval in k["fields"].items():
                if fname == "msg":
                    fields[fname] = _msg_bytes(fval, now)
                elif isinstance(fval, dict):  # a WorkerInfo
                    fields[fname] = bytes.fromhex(SERVER["worker_info_hex"])
                elif fname == "pending_since":
                    fields[fname] = str((now - 5) * 1_000_000_000)
                else:
                    fields[fname] = fval
            r.hset(key, mapping=fields)
        if k["ttl"] == "positive":
            r.expire(key, 10 if key.startswith(("asynq:servers:", "asynq:workers:")) else 90 * 86400)
    return state


def _golden_tasks(state: dict) -> dict[str, dict]:
    """Task ID -> the golden hash fields, for every task hash of a state."""
    out = {}
    for k in state["keys"]:
        m = re.match(r"^asynq:\{(.+)\}:t:(.+)$", k["key"])
        if m:
            out[m.group(2)] = k["fields"]
    return out


def _golden_count(state: dict, q: str, suffix: str) -> int:
    for k in state["keys"]:
        if k["key"] == f"asynq:{{{q}}}:{suffix}":
            return len(k.get("items") or k.get("members"))
    return 0


def _golden_counter(state: dict, q: str, suffix: str) -> int:
    for k in state["keys"]:
        if _fill(k["key"]) == f"asynq:{{{q}}}:{suffix}":
            return int(k["value"])
    return 0


@pytest.fixture
def ins(redis_url):
    inspector = Inspector(redis_url)
    yield inspector
    inspector.close()


# ---------------------------------------------------------------- Go's data, read back

TASK_STATES = [n for n in STATES if _golden_tasks(STATES[n])]


@pytest.mark.parametrize("name", sorted(STATES))
def test_queue_info_of_go_written_state(r, ins, name):
    state = seed_golden(r, name)
    queues = next(k["members"] for k in state["keys"] if k["key"] == "asynq:queues")
    assert ins.queues() == sorted(queues)
    q = queues[0]
    info = ins.get_queue_info(q)
    expected = {s: _golden_count(state, q, s) for s in ("pending", "active", "scheduled", "retry", "archived",
                                                        "completed")}
    aggregating = sum(len(k["members"]) for k in state["keys"] if k["key"].startswith(f"asynq:{{{q}}}:g:"))
    assert {s: getattr(info, s) for s in expected} == expected
    assert info.aggregating == aggregating
    assert info.groups == _golden_count(state, q, "groups")
    assert info.size == sum(expected.values()) + aggregating
    assert info.processed == _golden_counter(state, q, f"processed:{_today()}")
    assert info.failed == _golden_counter(state, q, f"failed:{_today()}")
    assert info.processed_total == _golden_counter(state, q, "processed")
    assert info.failed_total == _golden_counter(state, q, "failed")
    assert info.paused == any(k["key"].endswith(":paused") for k in state["keys"])
    if expected["pending"]:
        assert 4.0 <= info.latency < 60, info.latency  # pending_since was seeded 5 s ago
    else:
        assert info.latency == 0.0
    assert info.memory_usage == go_memory_usage(r, q)


@pytest.mark.parametrize("name", TASK_STATES)
def test_task_info_and_listing_of_go_written_tasks(r, ins, name):
    now = int(time.time())
    state = seed_golden(r, name, now)
    for task_id, fields in _golden_tasks(state).items():
        decoded = fields["msg"]["decoded"]
        q = decoded["queue"]
        info = ins.get_task_info(q, task_id)
        assert (info.id, info.queue, info.type, info.payload.hex()) == (task_id, q, decoded["type"],
                                                                        decoded["payload_hex"])
        assert info.state.value == fields["state"]
        assert info.max_retry == decoded["retry"] and info.retried == decoded["retried"]
        assert info.last_err == decoded["error_msg"]
        assert info.group == decoded["group_key"] and info.retention == decoded["retention"]
        assert info.timeout == decoded["timeout"]
        assert info.result == (fields["result"].encode() if "result" in fields else None)
        assert (info.completed_at is not None) == (fields["state"] == "completed")
        if fields["state"] == "scheduled":
            expected_at = 2_000_000_000 if name == "scheduled" else now + 3600
            assert info.next_process_at == datetime.fromtimestamp(expected_at, timezone.utc)
        elif fields["state"] == "retry":
            assert info.next_process_at == datetime.fromtimestamp(now + 3600, timezone.utc)
        elif fields["state"] == "pending":
            assert abs(info.next_process_at.timestamp() - time.time()) < 5
        else:
            assert info.next_process_at is None
        listed = ins.list_tasks(q, fields["state"], group=decoded["group_key"] or None)
        assert task_id in [t.id for t in listed]
        assert [t for t in listed if t.id == task_id][0].payload == info.payload


def test_servers_as_go_writes_them(r, ins):
    seed_golden(r, "active")
    now = int(time.time())
    # A stale server (expired index entry) is pruned and not listed, as Go's listServerKeys does.
    r.zadd(keys.ALL_SERVERS, {"asynq:servers:{old:1:x}": now - 100})
    r.set("asynq:servers:{old:1:x}", _proto.encode(_proto.ServerInfo(host="old", pid=1, server_id="x")))
    # Workers of an unknown server are ignored; garbage is skipped.
    r.hset(f"asynq:workers:{HOST_TAG}", "junk", b"\xff\xff\xff")
    r.zadd(keys.ALL_SERVERS, {"asynq:servers:{bad:2:y}": now + 10})
    r.set("asynq:servers:{bad:2:y}", b"\x0a\x05ab")  # truncated protobuf: skipped
    (server,) = ins.servers()
    d = SERVER["server_info_decoded"]
    assert (server.id, server.host, server.pid, server.concurrency, server.queues, server.strict_priority,
            server.status) == (d["server_id"], "vm", 23104, 3, {"default": 1}, False, "active")
    assert server.started.timestamp() == pytest.approx(d["start_time"]["seconds"] + d["start_time"]["nanos"] / 1e9)
    (worker,) = server.active_workers
    w = SERVER["worker_info_decoded"]
    assert (worker.task_id, worker.task_type, worker.task_payload, worker.queue) == ("st-active", "slow", b"zz",
                                                                                      "default")
    assert int(worker.deadline.timestamp()) == w["deadline"]["seconds"]
    assert r.zscore(keys.ALL_SERVERS, "asynq:servers:{old:1:x}") is None


def test_active_tasks_report_orphans_by_lease(r, ins):
    seed_golden(r, "active")
    now = int(time.time())
    msg = TaskMessage(type="slow", id="orphan", queue=Q, retry=25, timeout=1800)
    r.hset(keys.task_key(Q, "orphan"), mapping={"msg": encode_message(msg), "state": "active"})
    r.lpush(keys.active_key(Q), "orphan")
    r.zadd(keys.lease_key(Q), {"orphan": now - 100})
    tasks = {t.id: t for t in ins.list_active_tasks(Q)}
    assert tasks["orphan"].is_orphaned and not tasks["st-active"].is_orphaned
    assert [t.id for t in ins.list_active_tasks(Q)] == ["st-active", "orphan"]  # oldest first


# ---------------------------------------------------------------- Go's algorithms as oracles

def go_memory_usage(r: redis.Redis, q: str) -> int:
    """Asynq's memoryUsage script re-done with plain commands (20 per container, 5 groups)."""
    prefix = keys.task_key_prefix(q)
    total = 0.0
    for name in ("active", "pending", "scheduled", "retry", "archived", "completed"):
        key = f"{keys.queue_prefix(q)}{name}"
        is_list = name in ("active", "pending")
        ids = r.lrange(key, 0, 19) if is_list else r.zrange(key, 0, 19)
        if ids:
            sample = sum(r.memory_usage(prefix + i.decode()) or 0 for i in ids)
            n = r.llen(key) if is_list else r.zcard(key)
            total += sample / len(ids) * n
        total += r.memory_usage(key) or 0
    groups = [g.decode() for g in r.smembers(keys.groups_key(q))]
    assert len(groups) <= 5, "the oracle takes all groups; Go takes the first 5"
    count = sampled = sampled_bytes = 0
    for g in groups:
        count += r.zcard(keys.group_key(q, g))
        for i in r.zrange(keys.group_key(q, g), 0, 19):
            b = r.memory_usage(prefix + i.decode())
            if b:
                sampled_bytes += b
                sampled += 1
    if sampled:
        total += sampled_bytes / sampled * count
    return int(total)


def go_list_pending_ids(r: redis.Redis, q: str, page: int, size: int) -> list[str]:
    """Asynq's ListPendingTasks: LRANGE with negative offsets, then reversed."""
    start, stop = size * (page - 1), size * (page - 1) + size - 1
    return [i.decode() for i in reversed(r.lrange(keys.pending_key(q), -stop - 1, -start - 1))]


def _seed_messages(r, q: str, ids, state: str = "pending", **msg_kw) -> None:
    pipe = r.pipeline(transaction=False)
    for tid in ids:
        msg = TaskMessage(type="t", payload=tid.encode(), id=tid, queue=q, retry=25, timeout=1800, **msg_kw)
        fields = {"msg": encode_message(msg), "state": state}
        if state == "pending":
            fields["pending_since"] = str(time.time_ns())
        pipe.hset(keys.task_key(q, tid), mapping=fields)
    pipe.execute()


def test_pending_pages_are_oldest_first_like_go(r, ins):
    ids = [f"t{i:03d}" for i in range(100)]
    r.sadd(keys.ALL_QUEUES, Q)
    _seed_messages(r, Q, ids)
    for tid in ids:  # Go's client LPUSHes: t000 is the oldest, at the right end
        r.lpush(keys.pending_key(Q), tid)
    assert [t.id for t in ins.list_pending_tasks(Q)] == ids[:30]
    assert [t.id for t in ins.list_pending_tasks(Q, page=4, page_size=30)] == ids[90:]
    assert ins.list_pending_tasks(Q, page=5) == []
    for page, size in ((1, 7), (3, 7), (15, 7), (2, 50), (1, 100), (1, 1000), (9, 11)):
        assert [t.id for t in ins.list_pending_tasks(Q, page, size)] == go_list_pending_ids(r, Q, page, size)


def test_zset_pages_follow_scores_like_go(r, ins):
    now = int(time.time())
    ids = [f"s{i:02d}" for i in range(25)]
    r.sadd(keys.ALL_QUEUES, Q)
    _seed_messages(r, Q, ids, "scheduled")
    r.zadd(keys.scheduled_key(Q), {tid: now + 1000 - i for i, tid in enumerate(ids)})  # s24 runs first
    page1 = ins.list_scheduled_tasks(Q, 1, 10)
    assert [t.id for t in page1] == [i.decode() for i in r.zrange(keys.scheduled_key(Q), 0, 9)]
    assert [t.id for t in page1] == ids[::-1][:10]
    assert page1[0].next_process_at == datetime.fromtimestamp(now + 1000 - 24, timezone.utc)
    assert [t.id for t in ins.list_scheduled_tasks(Q, 3, 10)] == ids[::-1][20:]


def test_stats_without_looping_over_many_groups(r, ins, monkeypatch):
    """More groups than the script sums: counted in SSCAN batches, same exact answer."""
    r.sadd(keys.ALL_QUEUES, Q)
    pipe = r.pipeline(transaction=False)
    expected = {}
    for g in range(1200):
        name = f"g{g}"
        expected[name] = 1 + g % 3
        pipe.sadd(keys.groups_key(Q), name)
        pipe.zadd(keys.group_key(Q, name), {f"{name}-{i}": 1 for i in range(expected[name])})
    pipe.execute()
    info = ins.get_queue_info(Q)
    assert (info.groups, info.aggregating) == (1200, sum(expected.values()))
    assert {g.group: g.size for g in ins.groups(Q)} == expected
    monkeypatch.setattr(inspect_read, "GROUPS_SUMMED_IN_SCRIPT", 5000)  # the in-script path gives the same
    assert ins.get_queue_info(Q).aggregating == info.aggregating


def test_history_reads_daily_counters(r, ins):
    r.sadd(keys.ALL_QUEUES, Q)
    today = datetime.now(timezone.utc).date()
    yesterday = datetime.fromtimestamp(time.time() - 86400, timezone.utc).date()
    r.set(keys.processed_key(Q, today.isoformat()), 7)
    r.set(keys.failed_key(Q, today.isoformat()), 2)
    r.set(keys.processed_key(Q, yesterday.isoformat()), 3)
    stats = ins.history(Q, 3)
    assert [(s.date, s.processed, s.failed) for s in stats][:2] == [(today, 7, 2), (yesterday, 3, 0)]
    assert len(stats) == 3 and stats[2].processed == 0


def test_cluster_key_slot_matches_redis_cluster(tmp_path, r, ins):
    # The cluster bus port defaults to port + 10000 (refused above 55535): give it a free one.
    server = RedisServer(tmp_path, extra=["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                                          "--cluster-config-file", str(tmp_path / "nodes.conf")])
    try:
        server.start()
        cluster = redis.Redis(port=server.port)
        for q in ("default", "critical", "a:b", "ünï"):
            r.sadd(keys.ALL_QUEUES, q)
            assert ins.cluster_key_slot(q) == cluster.execute_command("CLUSTER", "KEYSLOT", keys.pending_key(q))
        cluster.close()
    finally:
        server.stop()


def test_scheduler_entries_and_events(r, ins):
    now = int(time.time())
    entry = _proto.SchedulerEntry(id="e1", spec="@every 30s", task_type="report", task_payload=b"{}",
                                  enqueue_options=['Queue("low")', "MaxRetry(2)"],
                                  next_enqueue_time=_proto.Timestamp(now + 30),
                                  prev_enqueue_time=_proto.Timestamp(-62135596800))  # Go's zero time
    r.zadd(keys.ALL_SCHEDULERS, {"asynq:schedulers:{h:1:s}": now + 20, "asynq:schedulers:{gone}": now - 50})
    r.lpush("asynq:schedulers:{h:1:s}", _proto.encode(entry), b"\x0a\xff")  # one good, one garbage
    (e,) = ins.scheduler_entries()
    assert (e.id, e.spec, e.task_type, e.task_payload, e.options) == ("e1", "@every 30s", "report", b"{}",
                                                                       ['Queue("low")', "MaxRetry(2)"])
    assert e.next_enqueue_at == datetime.fromtimestamp(now + 30, timezone.utc) and e.prev_enqueue_at is None
    for i in range(5):
        ev = _proto.SchedulerEnqueueEvent(task_id=f"task{i}", enqueue_time=_proto.Timestamp(now + i))
        r.zadd(keys.scheduler_history_key("e1"), {_proto.encode(ev): now + i})
    assert [ev.task_id for ev in ins.list_scheduler_enqueue_events("e1")] == [f"task{i}" for i in range(4, -1, -1)]
    assert [ev.task_id for ev in ins.list_scheduler_enqueue_events("e1", 2, 2)] == ["task2", "task1"]
    assert ins.list_scheduler_enqueue_events("nope") == []
    r.zadd(keys.scheduler_history_key("e1"), {b"\x12\xff": now + 100})  # garbage, newest: skipped
    assert [ev.task_id for ev in ins.list_scheduler_enqueue_events("e1", 1, 2)] == ["task4"]


# ---------------------------------------------------------------- single-task operations

def _enqueue(redis_url, *tasks, **options):
    with fastq.Client(redis_url) as client:
        return [client.enqueue(fastq.Task(t, b"p-" + t.encode()), task_id=t, **options) for t in tasks]


def test_delete_task_in_each_state_and_its_lock(r, ins, redis_url):
    _enqueue(redis_url, "a", unique=3600)
    _enqueue(redis_url, "b", process_in=3600)
    _enqueue(redis_url, "c", group="g")
    lock = keys.unique_key(Q, "a", b"p-a")
    assert r.get(lock) == b"a"
    for tid in ("a", "b", "c"):
        ins.delete_task(Q, tid)
        assert not r.exists(keys.task_key(Q, tid))
    assert not r.exists(lock) and r.llen(keys.pending_key(Q)) == 0 and r.zcard(keys.scheduled_key(Q)) == 0
    assert not r.sismember(keys.groups_key(Q), "g")
    with pytest.raises(TaskNotFoundError):
        ins.delete_task(Q, "a")


def test_active_tasks_cannot_be_deleted_archived_or_run(r, ins):
    seed_golden(r, "active")
    before = dump(r, "asynq:{default}:*")
    for op in (ins.delete_task, ins.archive_task, ins.run_task):
        with pytest.raises(TaskActiveError, match="cancel_processing"):
            op(Q, "st-active")
    assert dump(r, "asynq:{default}:*") == before


def test_run_task_sets_pending_since_and_refuses_pending(r, ins, redis_url):
    _enqueue(redis_url, "s", process_in=3600)
    _enqueue(redis_url, "p")
    ins.run_task(Q, "s")
    assert r.hget(keys.task_key(Q, "s"), "state") == b"pending"
    assert abs(int(r.hget(keys.task_key(Q, "s"), "pending_since")) / 1e9 - time.time()) < 5
    assert r.lrange(keys.pending_key(Q), 0, -1) == [b"s", b"p"]  # LPUSH, as Go
    with pytest.raises(TaskAlreadyPendingError):
        ins.run_task(Q, "p")


def test_run_task_from_a_group_and_the_archive(r, ins):
    seed_golden(r, "aggregating")
    ins.run_task(Q, "st-group-1")
    assert r.zrange(keys.group_key(Q, "g1"), 0, -1) == [b"st-group-2"] and r.sismember(keys.groups_key(Q), "g1")
    ins.run_task(Q, "st-group-2")
    assert not r.exists(keys.group_key(Q, "g1")) and not r.sismember(keys.groups_key(Q), "g1")
    r.flushall()
    seed_golden(r, "archived")
    ins.run_task(Q, "st-archived")
    assert r.zcard(keys.archived_key(Q)) == 0 and r.lrange(keys.pending_key(Q), 0, -1) == [b"st-archived"]


def test_archive_task_and_trim_deletes_hashes(r, ins, redis_url):
    _enqueue(redis_url, "x", "y")
    ins.archive_task(Q, "x")
    assert r.zrange(keys.archived_key(Q), 0, -1) == [b"x"] and r.lrange(keys.pending_key(Q), 0, -1) == [b"y"]
    with pytest.raises(TaskAlreadyArchivedError):
        ins.archive_task(Q, "x")
    # An archive at Asynq's cap (10 000) plus an entry older than 90 days: both trimmed, hashes too.
    now = int(time.time())
    ids = [f"old{i}" for i in range(10_000)]
    _seed_messages(r, Q, ids, "archived")
    r.zadd(keys.archived_key(Q), {tid: now - 10 - i for i, tid in enumerate(ids)})
    r.zadd(keys.archived_key(Q), {"old0": now - 91 * 86400})
    ins.archive_task(Q, "y")
    assert r.zcard(keys.archived_key(Q)) == 9_999 and r.zscore(keys.archived_key(Q), "y") is not None
    assert not r.exists(keys.task_key(Q, "old0")) and not r.exists(keys.task_key(Q, "old9999"))


def test_update_task_payload_keeps_the_rest(r, ins, redis_url):
    _enqueue(redis_url, "s", process_in=3600, max_retry=4, unique=60)
    before = r.hgetall(keys.task_key(Q, "s"))
    ins.update_task_payload(Q, "s", b"new payload")
    after = r.hgetall(keys.task_key(Q, "s"))
    old, new = decode_message(before[b"msg"]), decode_message(after[b"msg"])
    assert new.payload == b"new payload"
    assert (new.id, new.type, new.retry, new.unique_key, new.timeout) == (old.id, old.type, 4, old.unique_key, 1800)
    assert {k: v for k, v in after.items() if k != b"msg"} == {k: v for k, v in before.items() if k != b"msg"}
    _enqueue(redis_url, "p")
    with pytest.raises(TaskNotScheduledError, match="pending"):
        ins.update_task_payload(Q, "p", b"x")
    with pytest.raises(InvalidOptionError, match="bytes"):
        ins.update_task_payload(Q, "s", "text")


def test_cancel_processing_publishes_the_id(r, ins):
    pubsub = r.pubsub()
    pubsub.subscribe(keys.CANCEL_CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    got = []
    reader = threading.Thread(target=lambda: got.append(pubsub.get_message(timeout=5)))
    reader.start()
    assert ins.cancel_processing("task-42") == 1
    reader.join()
    assert got[0]["data"] == b"task-42"
    pubsub.close()


# ---------------------------------------------------------------- queues

def test_pause_and_unpause(r, ins, redis_url):
    _enqueue(redis_url, "a")
    ins.pause_queue(Q)
    assert abs(int(r.get(keys.paused_key(Q))) - time.time()) < 5 and ins.get_queue_info(Q).paused
    with pytest.raises(QueuePausedStateError, match="already paused"):
        ins.pause_queue(Q)
    ins.unpause_queue(Q)
    assert not r.exists(keys.paused_key(Q))
    with pytest.raises(QueuePausedStateError, match="not paused"):
        ins.unpause_queue(Q)


def test_delete_queue_empty_nonempty_force_and_active(r, ins, redis_url):
    _enqueue(redis_url, "a")
    _enqueue(redis_url, "b", process_in=60)
    _enqueue(redis_url, "c", retention=3600)
    r.zadd(keys.completed_key(Q), {"c": 1})  # pretend c completed: Go leaves completed tasks alone
    before = dump(r)
    with pytest.raises(QueueNotEmptyError):
        ins.delete_queue(Q)
    assert dump(r) == before
    steps = _write_delete_queue(r, force=True, batch=1)  # several batches
    assert steps > 1
    assert not r.sismember(keys.ALL_QUEUES, Q)
    assert not r.exists(keys.task_key(Q, "a"), keys.task_key(Q, "b"), keys.pending_key(Q), keys.scheduled_key(Q))
    assert r.exists(keys.completed_key(Q))
    with pytest.raises(QueueNotFoundError):
        ins.delete_queue(Q)
    r.flushall()
    seed_golden(r, "active")
    with pytest.raises(QueueHasActiveTasksError):
        ins.delete_queue(Q, force=True)
    r.flushall()
    r.sadd(keys.ALL_QUEUES, "empty")
    ins.delete_queue("empty")
    assert ins.queues() == []


def _write_delete_queue(r, force: bool, batch: int) -> int:
    """Run delete_queue's steps by hand to count its round trips."""
    from fastq._rdb import inspect_write
    from fastq._rdb.calls import execute

    steps = inspect_write.delete_queue(Q, force, batch)
    trips = 0
    try:
        calls = next(steps)
        while True:
            trips += 1
            calls = steps.send(execute(r, calls))
    except StopIteration:
        return trips


# ---------------------------------------------------------------- bulk operations

def test_bulk_operations_on_each_state(r, ins, redis_url):
    _enqueue(redis_url, "p1", "p2", unique=3600)
    _enqueue(redis_url, "s1", "s2", process_in=3600)
    _enqueue(redis_url, "g1", "g2", group="grp")
    assert ins.archive_all_scheduled_tasks(Q) == 2
    assert {t.id for t in ins.list_archived_tasks(Q)} == {"s1", "s2"}
    assert ins.run_all_archived_tasks(Q) == 2
    assert r.hget(keys.task_key(Q, "s1"), "pending_since") is not None
    assert ins.delete_all_pending_tasks(Q) == 4
    assert not r.keys("asynq:{default}:unique:*")  # locks freed (Go's deleteAllPending leaks them)
    calls = []
    assert ins.run_all_aggregating_tasks(Q, "grp") == 2
    assert not r.sismember(keys.groups_key(Q), "grp")
    assert [t.id for t in ins.list_pending_tasks(Q)] == ["g1", "g2"]
    assert ins.archive_all_tasks(Q, "pending", progress=lambda d, t: calls.append((d, t))) == 2
    assert calls == [(0, 2), (2, 2)]
    assert ins.delete_all_archived_tasks(Q) == 2 and r.dbsize() == 1  # only asynq:queues is left
    for call in (ins.delete_all_scheduled_tasks, ins.delete_all_retry_tasks, ins.delete_all_completed_tasks,
                 ins.run_all_retry_tasks, ins.archive_all_retry_tasks):
        assert call(Q) == 0


def test_bulk_group_operations(r, ins):
    seed_golden(r, "aggregating")
    assert ins.archive_all_aggregating_tasks(Q, "g1") == 2
    assert r.hget(keys.task_key(Q, "st-group-1"), "state") == b"archived"
    assert not r.sismember(keys.groups_key(Q), "g1")
    r.flushall()
    seed_golden(r, "aggregating")
    assert ins.delete_all_aggregating_tasks(Q, "g1") == 2
    assert r.keys("asynq:{default}:*") == []


def _seed_pending_fast(r, q: str, n: int) -> None:
    r.sadd(keys.ALL_QUEUES, q)
    data = encode_message(TaskMessage(type="bulk", payload=b"x" * 100, id="", queue=q, retry=25, timeout=1800))
    for start in range(0, n, 10_000):
        pipe = r.pipeline(transaction=False)
        ids = [f"b{i}" for i in range(start, min(n, start + 10_000))]
        for tid in ids:
            pipe.hset(keys.task_key(q, tid), mapping={"msg": data, "state": "pending", "pending_since": 1})
        pipe.lpush(keys.pending_key(q), *ids)
        pipe.execute()


@pytest.mark.parametrize("operation", ["delete", "archive"])
def test_bulk_on_100k_tasks_is_batched(r, ins, operation):
    _seed_pending_fast(r, Q, 100_000)
    calls = []
    started = time.perf_counter()
    if operation == "delete":
        n = ins.delete_all_tasks(Q, "pending", progress=lambda d, t: calls.append(d))
    else:
        n = ins.archive_all_tasks(Q, "pending", progress=lambda d, t: calls.append(d))
    took = time.perf_counter() - started
    print(f"\n{operation}_all of 100,000 pending tasks: {took:.2f}s in {len(calls) - 1} script calls")
    assert n == 100_000 and r.llen(keys.pending_key(Q)) == 0
    assert len(calls) - 1 == 100  # 1000 tasks per script call, never one giant script
    assert took < 120
    if operation == "delete":
        assert r.dbsize() == 1
    else:  # Asynq's archive cap: the newest 9 999 stay, the others are deleted with their hashes
        assert r.zcard(keys.archived_key(Q)) == 9_999 and r.dbsize() == 1 + 1 + 9_999


# ---------------------------------------------------------------- bad input and bad data

def test_unknown_queue_everywhere_changes_nothing(r, ins, redis_url):
    _enqueue(redis_url, "a")
    before = dump(r)
    calls = [
        lambda: ins.get_queue_info("nope"), lambda: ins.history("nope", 3), lambda: ins.groups("nope"),
        lambda: ins.get_task_info("nope", "a"), lambda: ins.list_pending_tasks("nope"),
        lambda: ins.list_active_tasks("nope"), lambda: ins.list_scheduled_tasks("nope"),
        lambda: ins.list_aggregating_tasks("nope", "g"), lambda: ins.delete_task("nope", "a"),
        lambda: ins.run_task("nope", "a"), lambda: ins.archive_task("nope", "a"),
        lambda: ins.update_task_payload("nope", "a", b""), lambda: ins.delete_queue("nope", force=True),
        lambda: ins.pause_queue("nope"), lambda: ins.unpause_queue("nope"), lambda: ins.cluster_key_slot("nope"),
        lambda: ins.delete_all_pending_tasks("nope"), lambda: ins.run_all_archived_tasks("nope"),
        lambda: ins.archive_all_pending_tasks("nope"), lambda: ins.check("nope"),
        lambda: ins.get_queue_infos([Q, "nope"]),
    ]
    for call in calls:
        with pytest.raises(QueueNotFoundError, match="nope"):
            call()
    assert dump(r) == before


@pytest.mark.parametrize("call, message", [
    (lambda i: i.get_queue_info(""), "queue must not be empty"),
    (lambda i: i.get_queue_info(None), "queue must be a str"),
    (lambda i: i.get_task_info(Q, "  "), "task ID must not be empty"),
    (lambda i: i.list_pending_tasks(Q, page=0), "page must be at least 1"),
    (lambda i: i.list_pending_tasks(Q, page_size=0), "page_size must be at least 1"),
    (lambda i: i.list_pending_tasks(Q, page_size=10_001), "page_size must be at most"),
    (lambda i: i.list_pending_tasks(Q, page="2"), "page must be an int"),
    (lambda i: i.list_tasks(Q, "running"), "state 'running'"),
    (lambda i: i.list_tasks(Q, "aggregating"), "group is required"),
    (lambda i: i.list_tasks(Q, "pending", group="g"), "only applies to state 'aggregating'"),
    (lambda i: i.history(Q, 0), "days must be at least 1"),
    (lambda i: i.run_all_tasks(Q, "pending"), "cannot run all tasks in state 'pending'"),
    (lambda i: i.archive_all_tasks(Q, "archived"), "cannot archive all tasks in state 'archived'"),
    (lambda i: i.delete_all_tasks(Q, "active"), "cannot delete all tasks in state 'active'"),
    (lambda i: i.delete_all_tasks(Q, "pending", batch_size=0), "batch_size must be at least 1"),
    (lambda i: i.list_scheduler_enqueue_events("", 1), "entry ID must not be empty"),
    (lambda i: i.cancel_processing(""), "task ID must not be empty"),
])
def test_bad_arguments_are_refused_before_any_write(r, ins, redis_url, call, message):
    _enqueue(redis_url, "a")
    before = dump(r)
    with pytest.raises(InvalidOptionError, match=message):
        call(ins)
    assert dump(r) == before


def test_undecodable_and_dangling_tasks(r, ins, redis_url, caplog):
    _enqueue(redis_url, "good1", "bad", "good2")
    r.hset(keys.task_key(Q, "bad"), "msg", b"\xff\xff\xff\xff")
    r.lpush(keys.pending_key(Q), "dangling")  # an ID without a hash
    with caplog.at_level(logging.WARNING, logger="fastq.inspect"):
        assert [t.id for t in ins.list_pending_tasks(Q)] == ["good1", "good2"]
    assert "asynq:{default}:t:bad" in caplog.text and "asynq:{default}:t:dangling" in caplog.text
    with pytest.raises(CorruptDataError, match=r"asynq:\{default\}:t:bad.*not a valid TaskMessage"):
        ins.get_task_info(Q, "bad")
    r.hset(keys.task_key(Q, "good1"), "state", "exploded")
    with pytest.raises(CorruptDataError, match="unknown task state"):
        ins.get_task_info(Q, "good1")
    with pytest.raises(CorruptDataError, match="unknown or missing state"):
        ins.run_task(Q, "good1")
    ins.delete_task(Q, "good1")  # a broken task can still be deleted
    assert not r.exists(keys.task_key(Q, "good1"))


def test_wrong_key_types_and_counters_are_named(r, ins, redis_url):
    _enqueue(redis_url, "a")
    r.set(keys.processed_total_key(Q), "lots")
    with pytest.raises(CorruptDataError, match=r"asynq:\{default\}:processed.*not an integer"):
        ins.get_queue_info(Q)
    r.delete(keys.processed_total_key(Q), keys.scheduled_key(Q))
    r.set(keys.scheduled_key(Q), "oops")
    with pytest.raises(CorruptDataError, match="wrong Redis type"):
        ins.get_queue_info(Q)
    with pytest.raises(CorruptDataError, match="wrong Redis type"):
        ins.delete_all_scheduled_tasks(Q)
    r.delete(keys.scheduled_key(Q))
    r.hset(keys.task_key(Q, "a"), "pending_since", "yesterday")
    with pytest.raises(CorruptDataError, match="pending_since.*not an integer"):
        ins.get_queue_info(Q)


def test_scripts_reload_after_script_flush(r, ins, redis_url):
    _enqueue(redis_url, "a")
    assert ins.get_queue_info(Q).pending == 1  # pipelined SISMEMBER + script
    r.script_flush()
    assert ins.get_queue_info(Q).pending == 1
    r.script_flush()
    assert [t.id for t in ins.list_pending_tasks(Q)] == ["a"]
    r.script_flush()
    assert ins.check() > 0


# ---------------------------------------------------------------- AsyncInspector

def test_async_inspector_gives_the_same_answers(r, ins, redis_url):
    seed_golden(r, "retry")
    _enqueue(redis_url, "p1", "p2")

    async def main():
        async with AsyncInspector(redis_url) as ai:
            info = await ai.get_queue_info(Q)
            listed = await ai.list_pending_tasks(Q)
            task = await ai.get_task_info(Q, "st-retry")
            groups = await ai.groups(Q)
            n = await ai.delete_all_tasks(Q, "retry")
            with pytest.raises(QueueNotFoundError):
                await ai.list_pending_tasks("nope")
            return info, listed, task, groups, n

    info, listed, task, groups, n = asyncio.run(main())
    sync_info = Inspector(redis_url).get_queue_info(Q)
    assert (info.pending, info.retry - 1, info.memory_usage > 0) == (sync_info.pending, sync_info.retry, True)
    assert [t.id for t in listed] == ["p1", "p2"]
    assert task.state.value == "retry" and task.retried == 1 and groups == [] and n == 1


# ---------------------------------------------------------------- with a real fastq worker

def test_live_worker_seen_and_cancelled_through_the_inspector(r, redis_url):
    """A fastq worker runs a long task: the Inspector lists it as active, sees the server and its
    worker entry, and cancel_processing makes the worker fail it into retry."""
    from helpers import RunningWorker

    started = asyncio.Event()

    async def slow(task):
        started.set()
        await asyncio.sleep(60)

    _enqueue(redis_url, "long")

    async def main():
        ins = AsyncInspector(redis_url)
        async with RunningWorker(slow, redis_url, concurrency=2):
            await asyncio.wait_for(started.wait(), 10)
            (active,) = await ins.list_active_tasks(Q)
            assert active.id == "long" and not active.is_orphaned
            servers = await async_wait_for_value(lambda: ins.servers(), lambda s: s and s[0].active_workers)
            assert servers[0].active_workers[0].task_id == "long" and servers[0].concurrency == 2
            assert await ins.cancel_processing("long") >= 1
            info = await async_wait_for_value(lambda: ins.get_task_info(Q, "long"), lambda t: t.state.value == "retry")
            assert info.retried == 1 and "canceled" in info.last_err
            (listed,) = await ins.list_retry_tasks(Q)
            assert listed.id == "long" and listed.next_process_at is not None
        await ins.close()

    async def async_wait_for_value(make, ok, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            value = await make()
            if ok(value):
                return value
            assert time.monotonic() < deadline, f"timed out; last value {value!r}"
            await asyncio.sleep(0.05)

    asyncio.run(main())
