"""Data faults written straight into Redis (rows D1-D6) and security rows (S1, S3)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis
from harness import Harness, wait

import fastq
from fastq import keys
from fastq._codec import TaskMessage, decode_message, encode_message


def _raw(h, tid: str, msg: bytes) -> None:
    h.r.hset(keys.task_key("default", tid), mapping={"msg": msg, "state": "pending"})
    h.r.lpush(keys.pending_key("default"), tid)
    h.ledger.enqueued([tid])


def test_d1_d2_d3_bad_data_is_archived_and_neighbours_proceed(h):
    _raw(h, "garbage", bytes(range(256)) * 4)                                   # D1 random bytes
    h.r.lpush(keys.pending_key("default"), "dangling")                          # D2 id without hash
    h.ledger.enqueued(["dangling"])
    _raw(h, "no-type", encode_message(TaskMessage(id="no-type", queue="default")))  # D3 empty type
    newer = encode_message(TaskMessage(type="work", id="newer", queue="default", payload=b"{}", timeout=60))
    _raw(h, "newer", newer + bytes([0xA2, 0x01, 0x02]) + b"hi")                 # D3 unknown field 20
    good = h.enqueue(20, sleep=0)
    sup = h.supervisor(1)
    h.quiesce(30)
    assert h.stop(sup) == 0
    assert set(good) | {"newer"} <= h.ledger.ids("end")
    archived = {x.decode() for x in h.r.zrange(keys.archived_key("default"), 0, -1)}
    assert archived == {"garbage", "dangling", "no-type"}
    for tid in archived:  # each archived record decodes and says why
        msg = decode_message(h.r.hget(keys.task_key("default", tid), "msg"))
        assert msg.type == "fastq:undecodable" and msg.error_msg
    assert "Traceback" not in h.log(sup)
    report = h.report()
    assert not report.lost and not report.problems


def test_d4_wrong_key_type_quarantines_only_that_queue(tmp_path):
    h = Harness(tmp_path, queue="healthy")
    try:
        h.r.set(keys.pending_key("broken"), "oops")
        ids = h.enqueue(50, sleep=0)
        sup = h.supervisor(1, "--queues", "broken,healthy")
        wait(lambda: set(ids) <= h.ledger.ids("end"), 20, "healthy queue drained")
        assert h.stop(sup) == 0
        log = h.log(sup)
        assert "queue broken skipped for 30s: key asynq:{broken}:pending is a string" in log
        assert log.count("skipped for 30s") <= 2  # one clear error, not a storm
    finally:
        h.close()


def test_d5_payload_over_the_limit_is_refused_at_enqueue(h):
    with pytest.raises(fastq.errors.PayloadTooLargeError):
        h.client.enqueue(fastq.Task("work", b"x" * (50 * 1024 * 1024)))
    assert not h.r.llen(keys.pending_key("default"))


def test_d6_unknown_type_retries_then_archives(h):
    tid = h.client.enqueue(fastq.Task("nope", b""), max_retry=1).id
    h.ledger.enqueued([tid])
    sup = h.supervisor(1)
    wait(lambda: h.r.zcard(keys.retry_key("default")), 20, "retry")
    h.r.zadd(keys.retry_key("default"), {tid: 0})  # due now
    wait(lambda: h.r.zcard(keys.archived_key("default")), 20, "archived after its retry")
    h.stop(sup)
    assert "handler not found" in decode_message(h.r.hget(keys.task_key("default", tid), "msg")).error_msg


def test_s1_least_privilege_acl_user(h):
    h.r.acl_setuser("fq", enabled=True, passwords=["+pw"], keys=["asynq:*"], channels=["asynq:*"],
                    commands=["+@read", "+@write", "+@scripting", "+@connection", "+@pubsub", "+time",
                              "-@dangerous", "-script|flush"])
    url = f"redis://fq:pw@127.0.0.1:{h.server.port}/0"
    client = fastq.Client(url)
    ids = [i.id for i in client.enqueue_many([fastq.Task("work", b"{}")] * 30)]
    h.ledger.enqueued(ids)
    sup = h.supervisor(1, url=url)
    wait(lambda: set(ids) <= h.ledger.ids("end"), 20, "tasks processed as the ACL user")
    assert h.stop(sup) == 0
    log = h.log(sup)
    assert "NOPERM" not in log and "Traceback" not in log
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.redis.flushall()
    client.close()


def test_s3_password_never_in_logs(h):
    h.r.config_set("requirepass", "S3CRET")
    url = f"redis://:S3CRET@127.0.0.1:{h.server.port}/0"
    client = fastq.Client(url)
    ids = [i.id for i in client.enqueue_many([fastq.Task("work", json.dumps({"then": "fail"}).encode())] * 3,
                                              max_retry=0)]
    sup = h.supervisor(1, "--log-level", "DEBUG", url=url)
    admin = redis.Redis(port=h.server.port, password="S3CRET")
    wait(lambda: admin.zcard(keys.archived_key("default")) == 3, 20, "failures archived")
    h.stop(sup)
    assert "S3CRET" not in h.log(sup)
    for tid in ids:
        assert b"S3CRET" not in admin.hget(keys.task_key("default", tid), "msg")
    bad = subprocess.run([sys.executable, "-m", "fastq.cli.supervisor", "x:y", "--redis-url",
                          "redis://:S3CRET@[::1/0"], capture_output=True, text=True)
    assert "S3CRET" not in bad.stderr + bad.stdout
    client.close()
    admin.close()
