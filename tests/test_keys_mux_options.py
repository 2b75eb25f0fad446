"""Key layout, ServeMux routing, Task and enqueue-option validation (no Redis)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import fastq
from fastq import keys
from fastq.options import ENQUEUE, GROUP, SCHEDULE, plan_enqueue
from fastq.server.config import WorkerConfig, parse_queues
from fastq.server.queues import QueueSelector


def test_keys_match_asynq_layout():
    assert keys.pending_key("default") == "asynq:{default}:pending"
    assert keys.task_key("critical", "abc") == "asynq:{critical}:t:abc"
    assert keys.lease_key("q") == "asynq:{q}:lease"
    assert keys.processed_key("q", "2026-01-02") == "asynq:{q}:processed:2026-01-02"
    assert keys.failed_total_key("q") == "asynq:{q}:failed"
    assert keys.group_key("q", "g1") == "asynq:{q}:g:g1"
    assert keys.server_info_key("vm", 12, "sid") == "asynq:servers:{vm:12:sid}"
    assert keys.workers_key("vm", 12, "sid") == "asynq:workers:{vm:12:sid}"
    # md5 of the golden payload, as in redis_states.json pending_unique
    assert keys.unique_key("default", "email:deliver", b'{"user_id":42}') == \
        "asynq:{default}:unique:email:deliver:1181f89307fa271072c095747d5813cc"
    assert keys.unique_key("default", "u", None) == "asynq:{default}:unique:u:"
    assert keys.unique_key("default", "u", b"") == "asynq:{default}:unique:u:"


# ---------------------------------------------------------------- ServeMux

def test_mux_exact_then_longest_prefix():
    mux = fastq.ServeMux()
    mux.handle("email:", lambda t: "prefix")
    mux.handle("email:welcome", lambda t: "exact")
    mux.handle("e", lambda t: "short")
    assert mux(fastq.Task("email:welcome")) == "exact"
    assert mux(fastq.Task("email:other")) == "prefix"
    assert mux(fastq.Task("etc")) == "short"
    with pytest.raises(fastq.HandlerNotFoundError, match="zzz"):
        mux(fastq.Task("zzz"))


def test_mux_decorator_and_async_detection():
    mux = fastq.ServeMux()

    @mux.handle("a")
    async def a(task):
        return 1

    def b(task):
        return 2

    assert mux.handle("b", b) is b
    assert mux.resolve("a") == (a, True)
    assert mux.resolve("b") == (b, False)


def test_mux_middleware_order():
    calls = []
    mux = fastq.ServeMux()
    mux.handle("t", lambda task: calls.append("handler"))

    def mw(name):
        def wrap(h):
            def inner(task):
                calls.append(name)
                return h(task)
            return inner
        return wrap

    mux.use(mw("outer"), mw("inner"))
    mux(fastq.Task("t"))
    assert calls == ["outer", "inner", "handler"]


@pytest.mark.parametrize("pattern, handler, error", [
    ("", lambda t: None, ValueError),
    ("  ", lambda t: None, ValueError),
    (None, lambda t: None, ValueError),
    ("x", "not callable", TypeError),
])
def test_mux_rejects_bad_registration(pattern, handler, error):
    with pytest.raises(error):
        fastq.ServeMux().handle(pattern, handler)


def test_mux_rejects_duplicate():
    mux = fastq.ServeMux()
    mux.handle("x", lambda t: None)
    with pytest.raises(ValueError, match="already"):
        mux.handle("x", lambda t: None)


# ---------------------------------------------------------------- Task

@pytest.mark.parametrize("args, error, match", [
    (("",), ValueError, "empty or blank"),
    (("   ",), ValueError, "empty or blank"),
    ((None,), TypeError, "must be str"),
    (("t", "text payload"), TypeError, "payload must be bytes, not str"),
    (("t", {"a": 1}), TypeError, "payload must be bytes, not dict"),
    (("t", b"", {"k": 1}), TypeError, "headers"),
])
def test_task_rejects_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        fastq.Task(*args)


def test_task_accepts_bytes_like():
    assert fastq.Task("t", bytearray(b"ab")).payload == b"ab"
    assert fastq.Task("t", memoryview(b"ab")).payload == b"ab"


# ---------------------------------------------------------------- options

T = fastq.Task("email:deliver", b"{}")


def test_defaults_match_asynq():
    plan = plan_enqueue(T, {})
    msg = plan.msg
    assert plan.kind == ENQUEUE
    assert msg.queue == "default" and msg.retry == 25 and msg.timeout == 1800 and msg.deadline == 0
    assert len(msg.id) == 36 and msg.id[14] == "4"  # UUID v4


def test_deadline_only_has_no_timeout():
    plan = plan_enqueue(T, {"deadline": datetime(2033, 5, 18, 3, 33, 20, tzinfo=timezone.utc)})
    assert plan.msg.timeout == 0 and plan.msg.deadline == 2000000000


def test_durations_accept_timedelta_and_numbers():
    plan = plan_enqueue(T, {"timeout": timedelta(minutes=2), "retention": 7200.9})
    assert plan.msg.timeout == 120 and plan.msg.retention == 7200


def test_process_in_schedules_and_past_process_at_enqueues():
    plan = plan_enqueue(T, {"process_in": 60}, now=1000.0)
    assert plan.kind == SCHEDULE and plan.process_at == 1060
    past = plan_enqueue(T, {"process_at": datetime(2000, 1, 1, tzinfo=timezone.utc)})
    assert past.kind == ENQUEUE


def test_group_and_unique():
    plan = plan_enqueue(T, {"group": "g", "unique": 3600})
    assert plan.kind == GROUP and plan.unique_ttl == 3600
    assert plan.msg.group_key == "g"
    assert plan.msg.unique_key.startswith("asynq:{default}:unique:email:deliver:")


def test_scheduled_unique_lock_lasts_past_run_time():
    plan = plan_enqueue(T, {"process_in": 100, "unique": 50}, now=1000.0)
    assert plan.unique_ttl == 150


@pytest.mark.parametrize("options, error, match", [
    ({"queue": ""}, fastq.InvalidOptionError, "'queue' must not be empty"),
    ({"queue": "  "}, fastq.InvalidOptionError, "'queue' must not be empty"),
    ({"queue": 3}, fastq.InvalidOptionError, "'queue' must be a str"),
    ({"task_id": ""}, fastq.InvalidOptionError, "'task_id'"),
    ({"max_retry": -1}, fastq.InvalidOptionError, "'max_retry'"),
    ({"max_retry": "3"}, fastq.InvalidOptionError, "'max_retry' must be an int"),
    ({"max_retry": True}, fastq.InvalidOptionError, "'max_retry' must be an int"),
    ({"timeout": -5}, fastq.InvalidOptionError, "'timeout' must not be negative"),
    ({"timeout": 0.5}, fastq.InvalidOptionError, "at least 1 second"),
    ({"timeout": "10"}, fastq.InvalidOptionError, "'timeout' must be a number"),
    ({"timeout": float("nan")}, fastq.InvalidOptionError, "finite"),
    ({"deadline": 12345}, fastq.InvalidOptionError, "'deadline' must be a datetime"),
    ({"process_at": "tomorrow"}, fastq.InvalidOptionError, "'process_at' must be a datetime"),
    ({"process_in": 5, "process_at": datetime.now()}, fastq.InvalidOptionError, "not both"),
    ({"unique": 0.5}, fastq.InvalidOptionError, "'unique' TTL must be at least 1 second"),
    ({"group": ""}, fastq.InvalidOptionError, "'group'"),
    ({"retention": -1}, fastq.InvalidOptionError, "'retention'"),
    ({"retry": 3}, TypeError, "unknown enqueue option 'retry'"),
    ({"queu": "x"}, TypeError, "unknown enqueue option 'queu'"),
])
def test_bad_options_name_the_problem(options, error, match):
    with pytest.raises(error, match=match):
        plan_enqueue(T, options)


def test_enqueue_needs_a_task():
    with pytest.raises(TypeError, match="needs a fastq.Task"):
        plan_enqueue("email", {})


# ---------------------------------------------------------------- worker config / queues

def test_parse_queues():
    assert parse_queues("critical=6,default=3,low=1") == {"critical": 6, "default": 3, "low": 1}
    assert parse_queues("a, b=2") == {"a": 1, "b": 2}
    assert parse_queues(["x", "y"]) == {"x": 1, "y": 1}


@pytest.mark.parametrize("spec, match", [
    ("a,,b", "empty entry"),
    ("=3", "must not be blank"),
    ("a=x", "must be an integer"),
    ("a=0", "at least 1"),
    ("a=-2", "at least 1"),
    ("a,a", "listed twice"),
    ("", "empty entry"),
])
def test_parse_queues_rejects(spec, match):
    with pytest.raises(fastq.InvalidOptionError, match=match):
        parse_queues(spec)


@pytest.mark.parametrize("kwargs, match", [
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": 1.5}, "concurrency"),
    ({"lease_duration": 2}, "at least 3 seconds"),
    ({"max_tasks": -1}, "max_tasks"),
    ({"batch_size": 0}, "batch_size"),
    ({"shutdown_timeout": -1}, "shutdown_timeout"),
    ({"poll_interval": "fast"}, "poll_interval"),
    ({"flow_sweep_interval": 0}, "flow_sweep_interval"),
    ({"flow_sweep_interval": "hourly"}, "flow_sweep_interval"),
])
def test_worker_config_rejects(kwargs, match):
    with pytest.raises(fastq.InvalidOptionError, match=match):
        WorkerConfig(**kwargs)


def test_weighted_order_follows_weights():
    import random

    sel = QueueSelector({"critical": 6, "default": 3, "low": 1}, rng=random.Random(7))
    firsts = [sel.order()[0] for _ in range(20000)]
    share = {q: firsts.count(q) / len(firsts) for q in ("critical", "default", "low")}
    assert abs(share["critical"] - 0.6) < 0.02
    assert abs(share["default"] - 0.3) < 0.02
    assert abs(share["low"] - 0.1) < 0.02
    assert sorted(sel.order()) == ["critical", "default", "low"]


def test_strict_order():
    sel = QueueSelector({"low": 1, "critical": 6, "default": 3}, strict=True)
    assert sel.next() == ["critical", "default", "low"]


def test_a_skipped_queue_is_left_out_until_its_time_is_up(monkeypatch):
    from types import SimpleNamespace

    from fastq.server import queues

    now = [100.0]
    monkeypatch.setattr(queues, "time", SimpleNamespace(monotonic=lambda: now[0]))
    sel = QueueSelector({"low": 1, "critical": 6, "default": 3}, strict=True)
    sel.skip("default", 30.0)
    assert sel.next() == ["critical", "low"]
    now[0] = 129.9
    assert sel.next() == ["critical", "low"]
    now[0] = 130.0
    assert sel.next() == ["critical", "default", "low"]
