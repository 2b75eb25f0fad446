"""Rate and concurrency limits of App tasks (fastq.server.limits), with an in-process fastq.Worker
on the session's Redis: bad options refused when the task is declared, tasks over a limit
waiting as ordinary scheduled tasks (not retries), key functions that fail archiving their task,
per-key rates, and no admission call at all for batches without limited task types.
The fleet-wide figures (2 worker processes) are in tests/test_limits_fleet.py."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable

import pytest

import fastq
from fastq import keys
from fastq._codec import decode_message
from fastq._rdb import limits as rdb_limits
from fastq.errors import InvalidOptionError
from fastq.server.config import WorkerConfig
from fastq.server.limits import TaskLimits, parse_rate


@pytest.fixture
def app(redis_url):
    application = fastq.App(redis_url, forward_interval=0.05, poll_interval=0.01)
    yield application
    application.close()


@pytest.fixture
def q():
    return f"lim-{uuid.uuid4().hex[:8]}"


def serve(app: fastq.App, until: Callable[[], bool], timeout: float = 20.0, **overrides: Any) -> fastq.Worker:
    """Run a worker of ``app`` in-process until ``until()`` holds (or ``timeout``)."""
    async def main() -> fastq.Worker:
        worker = fastq.Worker(app, app.worker_config(**overrides))
        running = asyncio.create_task(worker.run())
        end = time.monotonic() + timeout
        while not until() and time.monotonic() < end:
            await asyncio.sleep(0.02)
        worker.stop()
        await running
        return worker

    return asyncio.run(main())


# ------------------------------------------------------------------ bad input, at declaration

@pytest.mark.parametrize("kwargs, words", [
    ({"rate_limit": "100/x"}, ["'t'", "rate_limit", "100/x"]),
    ({"rate_limit": "0/s"}, ["rate_limit", "more than 0"]),
    ({"rate_limit": "-5/s"}, ["rate_limit", "-5/s"]),
    ({"rate_limit": "ten/s"}, ["rate_limit"]),
    ({"rate_limit": 100}, ["rate_limit", "string"]),
    ({"concurrency_limit": 0}, ["concurrency_limit", ">= 1"]),
    ({"concurrency_limit": -2}, ["concurrency_limit"]),
    ({"concurrency_limit": True}, ["concurrency_limit"]),
    ({"concurrency_limit": "5"}, ["concurrency_limit"]),
    ({"rate_limit": "5/s", "rate_key": "customer_id"}, ["rate_key", "function"]),
    ({"concurrency_limit": 2, "concurrency_key": 3}, ["concurrency_key", "function"]),
    ({"rate_key": lambda customer_id, **_: customer_id}, ["rate_key", "needs rate_limit"]),
    ({"concurrency_key": lambda customer_id, **_: customer_id}, ["concurrency_key", "needs concurrency_limit"]),
    ({"rate_limit": "5/s", "rate_key": lambda customer: customer}, ["rate_key", "customer_id", "**_"]),
    ({"concurrency_limit": 1, "concurrency_key": lambda: "x"}, ["concurrency_key", "customer_id"]),
])
def test_bad_limit_options_are_refused_when_the_task_is_declared(app, kwargs, words):
    with pytest.raises(InvalidOptionError) as info:
        @app.task(name="t", **kwargs)
        def t(customer_id: str, n: int = 1) -> None:
            pass
    for word in words:
        assert word in str(info.value)
    assert "t" not in app.tasks and not app.limits  # nothing registered


def test_good_limit_options_and_what_the_worker_is_given(app):
    @app.task(name="a", rate_limit="100/s")
    def a() -> None:
        pass

    @app.task(name="b", rate_limit="1.5/m", rate_key=lambda customer_id, **_: customer_id,
              concurrency_limit=3, concurrency_key=lambda customer_id, n: f"{customer_id}:{n}")
    def b(customer_id: str, n: int = 1) -> None:
        pass

    @app.task(name="c")
    def c() -> None:
        pass

    assert set(app.limits) == {"a", "b"}
    assert app.limits["a"].interval == pytest.approx(0.01) and app.limits["a"].concurrency == 0
    assert app.limits["b"].interval == pytest.approx(40.0) and app.limits["b"].concurrency == 3
    assert parse_rate("5/h") == 720.0 and parse_rate(" 2 / s ") == 0.5
    assert app.worker_config().limits == app.limits
    # fastq-supervisor gives Worker a config built from its flags: the App adds its limits
    mux, cfg = app.worker_parts(WorkerConfig(redis_url="redis://"))
    assert cfg.limits == app.limits
    with pytest.raises(InvalidOptionError, match="limits"):
        WorkerConfig(redis_url="redis://", limits={"x": 5})
    with pytest.raises(TypeError, match="unknown setting 'limits'"):
        fastq.App("redis://", limits={})


# ------------------------------------------------------------------ waiting is not failing

def test_tasks_over_a_rate_wait_as_plain_scheduled_tasks_not_retries(app, r, q, redis_url):
    ran: list[int] = []

    @app.task(name="lim:slow", queue=q, rate_limit="1/h")
    async def slow(n: int) -> None:
        ran.append(n)

    refs = slow.enqueue_many([(i,) for i in range(4)])
    serve(app, lambda: len(ran) >= 1 and r.zcard(keys.scheduled_key(q)) == 3, timeout=10)
    assert len(ran) == 1
    ins = fastq.Inspector(redis_url)
    try:
        scheduled = ins.list_scheduled_tasks(q)
        assert sorted(t.id for t in scheduled) == sorted(ref.id for ref in refs if ref.id != _ran_id(refs, r, q))
        now = time.time()
        for info in scheduled:
            assert info.state == fastq.TaskState.SCHEDULED and info.retried == 0 and info.last_err == ""
        slots = sorted(info.next_process_at.timestamp() for info in scheduled)
        assert slots[0] == pytest.approx(now + 3600, abs=30) and slots[2] == pytest.approx(now + 3 * 3600, abs=30)
        assert ins.get_queue_info(q).failed == 0 and ins.get_queue_info(q).retry == 0
    finally:
        ins.close()
    for ref in refs:  # no lease, no token left behind
        h = r.hgetall(keys.task_key(q, ref.id))
        assert b"lease_token" not in h
    assert r.llen(keys.active_key(q)) == 0 and r.zcard(keys.lease_key(q)) == 0


def _ran_id(refs: list[Any], r: Any, q: str) -> str:
    return next(ref.id for ref in refs if not r.exists(keys.task_key(q, ref.id)))


def test_tasks_over_a_concurrency_limit_wait_scheduled_and_run_when_a_slot_frees(app, r, q):
    running = 0
    peak = 0
    done: list[int] = []

    @app.task(name="lim:conc", queue=q, concurrency_limit=2)
    async def conc(n: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done.append(n)

    conc.enqueue_many([(i,) for i in range(12)])
    serve(app, lambda: len(done) == 12, timeout=30, concurrency=50)
    assert sorted(done) == list(range(12)) and peak == 2
    assert r.zcard(keys.slots_key(q, "lim:conc")) == 0  # every slot released with its outcome
    assert not r.exists(keys.failed_total_key(q))  # waiting is never a failure


def test_a_slot_lives_as_long_as_its_task_runs_past_the_lease_duration(app, r, q):
    """The lease thread extends the slots with the leases: a task running longer than its lease
    keeps its slot, so the next one waits for it."""
    spans: dict[int, list[float]] = {}

    @app.task(name="lim:long", queue=q, concurrency_limit=1)
    async def long(n: int) -> None:
        spans[n] = [time.monotonic()]
        await asyncio.sleep(7 if n == 0 else 0)
        spans[n].append(time.monotonic())

    long.enqueue(0)  # claimed first, so admitted first: task 1 waits (CONCURRENCY_WAIT, 5 s, at most)
    long.enqueue(1)
    done = lambda: len(spans) == 2 and all(len(s) == 2 for s in spans.values())  # noqa: E731
    serve(app, done, timeout=40, lease_duration=3)
    assert done()
    first, second = sorted(spans.values())
    assert first[1] - first[0] >= 7 and second[0] >= first[1]  # 7 s with a 3 s lease: no overlap


# ------------------------------------------------------------------ key functions

def test_per_key_rates_are_counted_per_key(app, r, q):
    starts: dict[str, list[float]] = {"A": [], "B": []}

    @app.task(name="lim:key", queue=q, rate_limit="10/s", rate_key=lambda customer_id, **_: customer_id)
    async def per_key(customer_id: str, n: int) -> None:
        starts[customer_id].append(time.monotonic())

    per_key.enqueue_many([(c, i) for i in range(6) for c in "AB"])
    serve(app, lambda: sum(map(len, starts.values())) == 12, timeout=20)
    for c in "AB":
        assert len(starts[c]) == 6
        assert starts[c][-1] - starts[c][0] >= 5 * 0.1 * 0.8  # 10/s for each key
    # the keys do not share one limit: B ran while A still waited
    assert starts["B"][0] < starts["A"][-1] and starts["A"][0] < starts["B"][-1]


@pytest.mark.parametrize("key, reason", [
    (lambda customer_id, **_: 1 / 0, "rate_key of task type 'lim:bad' raised ZeroDivisionError: division by zero"),
    (lambda customer_id, **_: 42, "rate_key of task type 'lim:bad' returned a int, not a str"),
])
def test_a_key_function_that_fails_archives_its_task_with_the_reason(app, r, q, key, reason):
    ran = []

    @app.task(name="lim:bad", queue=q, rate_limit="100/s", rate_key=key)
    async def bad(customer_id: str) -> None:
        ran.append(customer_id)

    ref = bad.enqueue("c1")
    serve(app, lambda: r.zscore(keys.archived_key(q), ref.id) is not None, timeout=10)
    assert ran == []
    msg = decode_message(r.hget(keys.task_key(q, ref.id), "msg"))
    assert msg.error_msg == reason and msg.retried == 0
    assert r.hget(keys.task_key(q, ref.id), "state") == b"archived"


# ------------------------------------------------------------------ no cost without limits

def test_no_admission_call_for_batches_without_limited_task_types(app, r, q, monkeypatch):
    calls: list[int] = []
    real = rdb_limits.admit_groups

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(sum(len(ids) for _, ids in args[3]))
        return await real(*args, **kwargs)

    monkeypatch.setattr(rdb_limits, "admit_groups", counting)
    done: list[str] = []

    @app.task(name="lim:free", queue=q)
    async def free(n: int) -> None:
        done.append("free")

    @app.task(name="lim:capped", queue=q, concurrency_limit=1000)
    async def capped(n: int) -> None:
        done.append("capped")

    free.enqueue_many([(i,) for i in range(50)])
    serve(app, lambda: len(done) == 50, timeout=20)
    assert calls == []  # 50 unlimited tasks: not one admission call
    capped.enqueue_many([(i,) for i in range(5)])
    free.enqueue_many([(i,) for i in range(5)])
    worker = serve(app, lambda: len(done) == 60, timeout=20)
    assert calls and sum(calls) == 5  # only the limited claims are asked about
    assert worker.processor is not None and worker.processor.limits is not None


def test_a_worker_without_limits_has_no_limits_machinery(redis_url):
    plain = fastq.App(redis_url)

    @plain.task(name="plain")
    def p() -> None:
        pass

    assert plain.worker_config().limits == {}
    worker = fastq.Worker(plain)
    assert worker.config.limits == {}
    assert not TaskLimits()
    plain.close()
