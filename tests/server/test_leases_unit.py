"""The lease thread (fastq.server.leases.LeaseKeeper) against an in-memory fake of its Redis seam.

Which IDs it extends and when (running tasks within deadline + grace, outcomes not yet written
while the loop runs), what it records, what it does when an extension fails (what was extended
is recorded first, then the error; back-off), and the blocked-loop watch. Its methods are driven
directly where possible; the extensions on a real redis-server are in tests/test_leases.py.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import types
from itertools import pairwise
from typing import Any

import pytest
from fakes import FakeBroker, FakeSyncBroker, HealthRecorder, until
from redis.exceptions import ConnectionError, ResponseError

from fastq._codec import TaskMessage
from fastq._rdb.worker import LEASE_MARGIN
from fastq.context import TaskContext
from fastq.server import leases
from fastq.server.config import WorkerConfig
from fastq.server.leases import LeaseKeeper
from fastq.server.processor import Processor, _Running


def setup(**config: Any) -> tuple[Processor, LeaseKeeper, FakeSyncBroker]:
    """A processor whose loops do not run (the tests book tasks by hand) and its lease keeper,
    which talks to a ``FakeSyncBroker``; not started."""
    config.setdefault("queues", {"q": 1, "r": 1})
    config.setdefault("hard_timeout_grace", 2.0)
    cfg = WorkerConfig(**config)
    p = Processor(FakeBroker(), lambda task: None, cfg, "srv")
    keeper = LeaseKeeper(p, cfg, client=object())
    sync = FakeSyncBroker()
    keeper._broker = sync  # type: ignore[assignment]  # what start() sets up on the thread's client
    return p, keeper, sync


def hold(p: Processor, tid: str, queue: str = "q", deadline_in: float = 60.0, future: Any = None) -> _Running:
    """Book ``tid`` as running in ``p`` (its lease valid 0.5 s more by its own account)."""
    now = time.time()
    ctx = TaskContext(tid, 0, 3, queue, "report:build", now + deadline_in)
    run = _Running(tid, queue, TaskMessage(type="report:build", id=tid, queue=queue), ctx, now, now + deadline_in,
                   "srv:1", time.monotonic() + 0.5, lambda task: None)
    run.future = future
    p.running[tid] = run
    return run


# ------------------------------------------------------------------ which IDs

def test_holds_running_tasks_within_deadline_plus_grace_and_unwritten_outcomes():
    p, keeper, _ = setup(hard_timeout_grace=2.0)
    a = hold(p, "a")
    b = hold(p, "b", "r", deadline_in=-1.5)  # past its deadline, within the grace: its handler may still end
    hold(p, "late", deadline_in=-2.5)  # past deadline + grace: no longer extended
    p.acks.unacked["done"] = "q"  # outcome known, not yet written
    p.acks.unacked[b"\xff"] = "r"  # an undecodable claim being archived: extended under its raw ID
    held, runs = keeper.held()
    assert held == {"q": ["a", "done"], "r": ["b", b"\xff"]}
    assert runs == [a, b]


def test_unwritten_outcomes_are_kept_only_while_the_loop_runs_or_a_task_is_within_bounds():
    p, keeper, _ = setup(hard_timeout_grace=2.0, lease_duration=8)
    assert keeper.alive_window == 8.0  # max(grace, lease)
    p.acks.unacked["done"] = "q"
    keeper._stamp = time.monotonic() - 7  # the loop last ran 7 s ago: it may yet write the outcome
    assert keeper.held() == ({"q": ["done"]}, [])
    keeper._stamp = time.monotonic() - 9  # hung for longer than the window: let the lease go
    assert keeper.held() == ({}, [])
    hold(p, "late", deadline_in=-3)
    assert keeper.held() == ({}, [])  # a task past its bound does not keep them either
    a = hold(p, "a", "r")  # a running task within its bound: the loop is expected back
    assert keeper.held() == ({"r": ["a"], "q": ["done"]}, [a])


def test_nothing_held_means_no_call():
    p, keeper, sync = setup()
    hold(p, "late", deadline_in=-5)
    assert keeper._extend() is None
    assert sync.extends == [] and keeper.rounds == 0


# ------------------------------------------------------------------ extending and recording

def test_extends_every_held_lease_in_one_call_and_records_it_for_the_deadline_loop():
    p, keeper, sync = setup(lease_duration=8)
    a, b = hold(p, "a"), hold(p, "b", "r")
    p.acks.unacked["done"] = "q"
    before = time.monotonic()
    earliest = keeper._extend()
    after = time.monotonic()
    assert sync.extends == [({"q": ["a", "done"], "r": ["b"]}, 8)]
    for run in (a, b):  # recorded: valid until the call's start + lease - margin
        assert before + 8 - LEASE_MARGIN <= run.lease_until <= after + 8 - LEASE_MARGIN
    assert earliest == min(a.lease_until, b.lease_until)  # when the next round is due at the latest
    assert keeper.rounds == 1


def test_what_was_extended_is_recorded_before_the_error_is_raised():
    p, keeper, sync = setup()
    a, b = hold(p, "a"), hold(p, "b", "r")
    b_until = b.lease_until
    sync.fail["r"] = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        keeper._extend()
    assert a.lease_until > time.monotonic() + 5  # q's call succeeded: the deadline loop may trust it
    assert b.lease_until == b_until  # r's did not
    assert keeper.rounds == 0


def test_a_failed_round_is_reported_as_a_lease_error_on_the_loop_and_its_end_once():
    p, keeper, sync = setup()
    hold(p, "a")
    recorder = HealthRecorder()
    seen = recorder.seen
    p.hooks.append(recorder)

    async def main() -> None:
        keeper._loop = asyncio.get_running_loop()  # reports go through call_soon_threadsafe
        sync.down = [ConnectionError("Connection refused"), ConnectionError("Connection refused")]
        assert keeper._round() == (False, None)
        assert keeper._round() == (False, None)
        await asyncio.sleep(0)
        assert p.health.down and seen == [("error", "lease"), ("error", "lease")]
        ok, earliest = keeper._round()
        assert ok and earliest is not None
        ok, _ = keeper._round()
        await asyncio.sleep(0)
        assert ok and not p.health.down

    asyncio.run(main())
    assert seen == [("error", "lease"), ("error", "lease"), ("restored", "lease")]


def test_an_unexpected_error_is_logged_once_with_its_traceback(caplog):
    p, keeper, sync = setup()
    hold(p, "a")
    with caplog.at_level(logging.DEBUG, logger="fastq.worker"):
        for _ in range(3):
            sync.down = [TypeError("a bug")]
            assert keeper._round() == (False, None)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "unexpected error extending leases" in errors[0].getMessage()
    assert not p.health.down  # not a Redis outage
    assert keeper._round()[0]
    sync.down = [TypeError("a bug")]  # after a good round the same error is news again
    with caplog.at_level(logging.DEBUG, logger="fastq.worker"):
        keeper._round()
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


def test_the_thread_backs_off_after_failures_and_keeps_its_tick_otherwise(monkeypatch, caplog):
    """Driven through start()/stop() with the seam replaced: gaps after failed rounds double from
    BACKOFF_MIN up to BACKOFF_MAX (jitter pinned to 1.0); good rounds come every tick, and with
    running tasks never closer than MIN_GAP."""
    monkeypatch.setattr(leases, "BACKOFF_MIN", 0.03)
    monkeypatch.setattr(leases, "BACKOFF_MAX", 0.12)
    monkeypatch.setattr(leases, "random", types.SimpleNamespace(random=lambda: 0.5))
    p, keeper, sync = setup(heartbeat_interval=0.01)  # tick: min(heartbeat_interval, lease / 4)
    assert keeper.tick == 0.01
    monkeypatch.setattr(leases, "SyncBroker", lambda client: sync)
    hold(p, "a")
    sync.down = [ConnectionError("Connection refused")] * 4

    async def main() -> None:
        keeper.start()
        try:
            await until(lambda: len(sync.times) >= 9, what="failing rounds, then good ones")
            await asyncio.sleep(0.01)  # the report of the outage's end runs on this loop
        finally:
            await keeper.stop(timeout=1.0)
        assert not keeper.alive

    with caplog.at_level(logging.WARNING, logger="fastq.worker"):
        asyncio.run(main())
    gaps = [b - a for a, b in pairwise(sync.times)]
    failing, good = gaps[:4], gaps[4:]
    for gap, backoff in zip(failing, (0.03, 0.06, 0.12, 0.12), strict=True):
        assert backoff - 0.005 <= gap <= backoff + 0.1, gaps
    # back to the tick, which with running tasks is never below MIN_GAP
    assert min(good) >= leases.MIN_GAP - 0.005 and sorted(good)[len(good) // 2] < leases.MIN_GAP + 0.04, gaps
    assert caplog.text.count("Redis unreachable (lease failed") == 1
    assert caplog.text.count("Redis reachable again") == 1


# ------------------------------------------------------------------ the blocked-loop watch

class BlockedHook:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, float]] = []

    def loop_blocked(self, ctx: Any, seconds: float) -> None:
        self.calls.append((ctx, seconds))


def test_a_blocked_loop_is_reported_once_per_episode_naming_the_task(caplog):
    """A handler blocks the loop; meanwhile another thread (the lease thread's role) runs the watch."""
    p, keeper, _ = setup()
    hook = BlockedHook()
    p.hooks.append(hook)
    release = threading.Lock()
    release.acquire()
    blocking = threading.Event()
    watched: list[BaseException] = []

    def watch() -> None:  # what the lease thread does each poll while the loop is stuck
        try:
            blocking.wait(5)
            end = time.monotonic() + 5
            while sys._current_frames()[loop_ident].f_code.co_name != "blocking_call":  # in acquire() now
                assert time.monotonic() < end, "the handler never blocked"
                time.sleep(0.001)
            keeper._stamp = time.monotonic() - 1.5  # the loop last stamped 1.5 s ago
            keeper._watch(time.monotonic())
            keeper._watch(time.monotonic() + 1)  # still blocked: the same episode, no new line
        except BaseException as exc:  # noqa: BLE001 - shown by the test
            watched.append(exc)
        finally:
            release.release()

    def blocking_call() -> None:
        blocking.set()
        release.acquire(timeout=5)  # the beginner's time.sleep() in an async def handler (C code)

    async def handler() -> None:
        blocking_call()

    loop_ident = threading.get_ident()

    async def main() -> None:
        keeper._loop = asyncio.get_running_loop()
        keeper._loop_ident = loop_ident
        watcher = threading.Thread(target=watch)
        watcher.start()
        hold(p, "other", future=asyncio.ensure_future(asyncio.sleep(10)))  # running, but not blocking
        run = hold(p, "slow", future=asyncio.ensure_future(handler()))
        await run.future
        watcher.join(5)
        assert not watched and keeper._flagged is not None
        keeper._tick()  # the loop runs again: its timer stamps (and measures the gap)
        keeper._timer.cancel()  # type: ignore[union-attr]
        keeper._watch(time.monotonic())  # the thread sees the new stamp: the episode is over
        await asyncio.sleep(0)  # loop_blocked goes to hooks on the loop
        p.running["other"].future.cancel()

    with caplog.at_level(logging.INFO, logger="fastq.worker"):
        asyncio.run(main())
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in lines if level == logging.WARNING]
    assert len(warnings) == 1, lines
    assert "blocked for 1.5s so far by task slow (report:build)" in warnings[0]
    assert "in blocking_call()" in warnings[0] and "await" in warnings[0]
    assert any(level == logging.INFO and "ran again after 1.5s (task slow)" in m for level, m in lines), lines
    ((ctx, seconds),) = hook.calls
    assert ctx.task_id == "slow" and 1.4 <= seconds <= 2.0


def test_a_block_outside_any_handler_is_reported_without_a_task_and_short_gaps_are_not(caplog):
    p, keeper, _ = setup()
    keeper._loop_ident = threading.get_ident()  # the watch looks at this thread's stack
    hold(p, "other", future=None)
    now = time.monotonic()
    keeper._stamp = now - 0.9  # within BLOCKED_AFTER: a busy loop, not a blocked one
    with caplog.at_level(logging.WARNING, logger="fastq.worker"):
        keeper._watch(now)
        assert caplog.records == [] and keeper._flagged is None
        keeper._stamp = now - 3
        keeper._watch(now)
        keeper._stamp = now  # over (no loop: no hook call)
        keeper._watch(now)
        keeper._stamp = now - 2  # a second episode: a second line
        keeper._watch(now)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("(not inside a task handler)" in m for m in lines), lines
    assert "blocked for 3.0s so far" in lines[0] and "blocked for 2.0s so far" in lines[1]


def test_no_report_once_stopping():
    p, keeper, _ = setup()
    keeper._loop_ident = threading.get_ident()
    keeper._stop.set()
    keeper._stamp = time.monotonic() - 5
    keeper._watch(time.monotonic())
    assert keeper._flagged is None
