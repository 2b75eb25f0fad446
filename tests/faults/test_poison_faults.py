"""Poison bytes in Redis (rows P1-P4): IDs that are not UTF-8 in pending, active, the lease set and
the cancel channel. Go strings may hold any bytes, and anyone with write access can push them; no
such byte may stop the supervisor, a worker loop or another task, and the bad entry ends archived
with the reason instead of staying active forever."""
from __future__ import annotations

import os
import signal
import time

from harness import wait

from fastq import keys
from fastq._codec import TaskMessage, decode_message, encode_message

BAD = b"\xff\xfe\x00bad\x80"
Q = "default"


def _archived_reason(h, raw_id: bytes) -> str:
    msg = decode_message(h.r.hget(keys.task_key(Q, "").encode() + raw_id, "msg"))
    return msg.error_msg


def _plant_active(h, raw_id: bytes, token: bytes, lease_score: float, msg: bytes | None = None) -> None:
    """Put ``raw_id`` in active and in the lease set, as a claim with ``token`` (no fastq code involved)."""
    key = keys.task_key(Q, "").encode() + raw_id
    fields = {b"state": b"active", b"lease_token": token}
    if msg is not None:
        fields[b"msg"] = msg
    h.r.hset(key, mapping=fields)
    h.r.lpush(keys.active_key(Q), raw_id)
    h.r.zadd(keys.lease_key(Q), {raw_id: lease_score})


def _plant_claim(h, tid: str, token: bytes, lease_score: float) -> str:
    """A valid task of the fault app, claimed with ``token`` (written by hand: no worker sees it pending)."""
    msg = TaskMessage(type="work", payload=b"{}", id=tid, queue=Q, retry=25, timeout=1800)
    _plant_active(h, tid.encode(), token, lease_score, encode_message(msg))
    h.ledger.enqueued([tid])
    return tid


def _sanity(h, sup) -> None:
    assert sup.poll() is None, "the supervisor died"
    log = h.log(sup)
    assert "Traceback" not in log, log[-3000:]


def test_p1_non_utf8_id_in_pending_is_archived_and_its_batch_runs(h):
    before = h.enqueue(30, sleep=0)
    h.r.lpush(keys.pending_key(Q), BAD)  # claimed in the same batch as the tasks around it
    after = h.enqueue(30, sleep=0)
    sup = h.supervisor(2)
    h.quiesce(20)
    wait(lambda: set(before + after) <= h.ledger.ids("end"), 10, "every valid task of the batch ran")
    assert h.r.zscore(keys.archived_key(Q), BAD) is not None
    assert _archived_reason(h, BAD) == "task ID is not valid UTF-8"
    assert not h.r.llen(keys.active_key(Q)) and not h.r.zcard(keys.lease_key(Q))
    more = h.enqueue(20, sleep=0)  # the fetch loops are alive
    wait(lambda: set(more) <= h.ledger.ids("end"), 10, "tasks enqueued afterwards")
    _sanity(h, sup)
    assert h.stop(sup) == 0
    h.report().assert_ok()


def test_p2_non_utf8_claim_of_a_killed_worker_does_not_stop_the_supervisor(h):
    """The supervisor settles a SIGKILLed worker's claims at once, from the lease tokens: a claim
    whose ID is not UTF-8 is archived, and the supervisor goes on (before: UnicodeDecodeError)."""
    sup = h.supervisor(2)
    pids = h.wait_workers(sup, 2)
    victim = pids[0]
    wait(lambda: any(f":{victim}:".encode() in k for k in h.r.zrange(keys.ALL_SERVERS, 0, -1)), 10,
         "the worker's server info")
    server_key = next(k for k in h.r.zrange(keys.ALL_SERVERS, 0, -1) if f":{victim}:".encode() in k)
    server_id = server_key.rstrip(b"}").rsplit(b":", 1)[1]  # asynq:servers:{host:pid:server id}
    far = time.time() + 3600  # a lease far in the future: only the supervisor's fast path can settle it
    _plant_active(h, BAD, server_id + b":1", far)
    good = _plant_claim(h, "good-claim", server_id + b":1", far)
    os.kill(victim, signal.SIGKILL)
    wait(lambda: h.r.zscore(keys.archived_key(Q), BAD) is not None, 10, "the bad claim archived")
    assert _archived_reason(h, BAD) == "task ID is not valid UTF-8"
    wait(lambda: good in h.ledger.ids("end"), 15, "the valid claim recovered and run")
    wait(lambda: len(h.workers(sup)) == 2, 15, "the killed worker replaced")
    more = h.enqueue(10, sleep=0)
    wait(lambda: set(more) <= h.ledger.ids("end"), 10, "work goes on")
    _sanity(h, sup)
    assert h.stop(sup) == 0
    h.report().assert_ok()


def test_p3_non_utf8_id_with_expired_lease_does_not_stop_lease_recovery(h):
    """An ID that is not UTF-8 in the lease set (expired, owner unknown) is archived by lease
    recovery, which goes on recovering real tasks (before: the recover loop died in every worker)."""
    dead = b"no-such-server:1"
    _plant_active(h, BAD, dead, time.time() - 60)
    _plant_active(h, b"no-hash-task", dead, time.time() - 60)  # an ID whose hash has no message
    real = _plant_claim(h, "real-claim", dead, time.time() - 60)
    sup = h.supervisor(2)
    wait(lambda: h.r.zscore(keys.archived_key(Q), BAD) is not None, 15, "the bad ID archived")
    assert _archived_reason(h, BAD) == "task ID is not valid UTF-8"
    wait(lambda: h.r.zscore(keys.archived_key(Q), b"no-hash-task") is not None, 15, "the hashless ID archived")
    assert _archived_reason(h, b"no-hash-task") == "task hash has no message"
    wait(lambda: real in h.ledger.ids("end"), 20, "the real task recovered and run")
    assert not h.r.llen(keys.active_key(Q)) and not h.r.zcard(keys.lease_key(Q))
    _sanity(h, sup)
    assert h.stop(sup) == 0
    h.report().assert_ok()


def test_p4_non_utf8_cancel_message_does_not_stop_the_cancel_listener(h):
    sup = h.supervisor(2)
    h.wait_workers(sup, 2)
    wait(lambda: h.r.pubsub_numsub(keys.CANCEL_CHANNEL)[0][1] >= 2, 10, "both workers subscribed")
    for junk in (b"\xff\xfe", b"\x00", b"\xc3"):
        h.r.publish(keys.CANCEL_CHANNEL, junk)
    long = h.enqueue_one(sleep=60, max_retry=0)
    wait(lambda: long in h.ledger.ids("start"), 10, "long task running")
    time.sleep(0.3)
    assert h.r.pubsub_numsub(keys.CANCEL_CHANNEL)[0][1] >= 2
    h.r.publish(keys.CANCEL_CHANNEL, long)
    wait(lambda: h.r.zscore(keys.archived_key(Q), long) is not None, 10, "cancelled task archived")
    assert decode_message(h.r.hget(keys.task_key(Q, long), "msg")).error_msg == "context canceled"
    _sanity(h, sup)
    assert h.stop(sup) == 0


def test_p5_undecodable_message_in_an_expired_lease_is_archived_not_left_active(h):
    """A claim whose message cannot be decoded and whose worker is gone used to be skipped by
    lease recovery forever (left to a dequeue path it never passes again)."""
    _plant_active(h, b"garbage-msg", b"gone:1", time.time() - 60, b"\xff\x00 not protobuf")
    sup = h.supervisor(1)
    wait(lambda: h.r.zscore(keys.archived_key(Q), b"garbage-msg") is not None, 15, "archived")
    assert _archived_reason(h, b"garbage-msg").startswith("cannot decode task message")
    archived = decode_message(h.r.hget(keys.task_key(Q, "garbage-msg"), "msg"))
    assert archived.payload == b"\xff\x00 not protobuf"  # the bytes are kept for inspection
    _sanity(h, sup)
    assert h.stop(sup) == 0

