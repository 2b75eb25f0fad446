"""fastq.server.sync_pool on its own (no Redis): batched threads and the inline pool."""
from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from fastq.server.sync_pool import InlinePool, SyncJob, ThreadPool, make_pool

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("test_sync_pool", default="unset")


class Run:
    """What a job needs of the processor's _Running: ``done`` (settled before it started)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False


def job_for(run: Run, fn, *args) -> SyncJob:
    cctx = contextvars.copy_context()
    cctx.run(VAR.set, run.name)  # as the processor sets the task context in the job's own copy
    return SyncJob(run, cctx, fn, *args)


class Settled(list):
    """The pool's on_done: records (run name, result, exception) of each job as it is settled
    (the pool drops the job's references right after)."""

    def __call__(self, job: SyncJob) -> None:
        self.append((job.run.name, job.result, job.exc))

    def by_name(self) -> dict:
        return {name: (result, exc) for name, result, exc in self}


def read_var() -> tuple[str, str]:
    return VAR.get(), threading.current_thread().name


async def settle_all(pool, jobs: list[SyncJob], finished: list, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while len(finished) < len(jobs):
        assert time.monotonic() < end, f"{len(finished)} of {len(jobs)} jobs settled"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("kind", ["threads", "inline"])
def test_each_job_runs_in_its_own_context_and_is_settled_on_the_loop(kind):
    async def main():
        loop_thread = threading.current_thread()
        finished = Settled()
        settled_on: set[threading.Thread] = set()

        def on_done(job: SyncJob) -> None:
            settled_on.add(threading.current_thread())
            finished(job)

        pool = make_pool(kind, 8, on_done)
        pool.bind(asyncio.get_running_loop())
        runs = [Run(f"task-{i}") for i in range(500)]
        jobs = [pool.submit(job_for(run, read_var)) for run in runs]
        await settle_all(pool, jobs, finished)
        pool.close()
        assert settled_on == {loop_thread}
        outcomes = finished.by_name()
        assert len(finished) == len(outcomes) == 500 and all(j.done() and j.run is None for j in jobs)
        assert all(exc is None and result[0] == name for name, (result, exc) in outcomes.items())
        ran_on = {result[1] for result, _ in outcomes.values()}
        if kind == "inline":
            assert ran_on == {loop_thread.name}
        else:
            assert loop_thread.name not in ran_on and len(ran_on) <= 8
        assert VAR.get() == "unset"  # nothing leaked into the loop's context

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["threads", "inline"])
def test_exceptions_are_the_outcome_and_settled_jobs_are_skipped(kind):
    ran: list[str] = []

    def work(name: str) -> str:
        ran.append(name)
        if name == "boom":
            raise SystemExit(3)  # even BaseException: the task fails, the worker does not
        return name

    async def main():
        finished = Settled()
        pool = make_pool(kind, 4, finished)
        pool.bind(asyncio.get_running_loop())
        skipped = Run("skipped")
        jobs = [pool.submit(job_for(Run(n), work, n)) for n in ("ok", "boom")]
        jobs.append(pool.submit(job_for(skipped, work, "skipped")))
        skipped.done = True  # settled (deadline, cancel) before a thread took it
        await settle_all(pool, jobs, finished)
        pool.close()
        outcomes = finished.by_name()
        assert outcomes["ok"] == ("ok", None)
        assert isinstance(outcomes["boom"][1], SystemExit)
        assert jobs[2].done() and "skipped" not in ran

    asyncio.run(main())


def test_a_blocking_handler_does_not_hold_up_the_jobs_queued_behind_it():
    """One thread takes a batch; when a job in it blocks, the jobs after it get threads of their
    own (the watchdog), and the event loop keeps running meanwhile."""
    release = threading.Event()

    def block() -> None:
        assert release.wait(30)

    async def main():
        finished = Settled()
        pool = ThreadPool(16, finished)
        pool.bind(asyncio.get_running_loop())
        blocker = pool.submit(job_for(Run("blocker"), block))
        quick = [pool.submit(job_for(Run(f"q{i}"), read_var)) for i in range(50)]
        ticks = 0
        end = time.monotonic() + 20
        while not all(j.done() for j in quick):
            assert time.monotonic() < end, "quick jobs stuck behind a blocking one"
            await asyncio.sleep(0.001)
            ticks += 1
        assert not blocker.done() and ticks > 0
        release.set()
        await settle_all(pool, [blocker, *quick], finished)
        pool.close()

    asyncio.run(main())


def test_blocking_handlers_run_up_to_max_threads_at_once():
    """Twenty handlers that can only return together (a barrier of twenty) all finish: the pool
    runs as many blocking handlers at once as it has threads, as one thread per task did."""
    barrier = threading.Barrier(20, timeout=20)

    async def main():
        finished = Settled()
        pool = ThreadPool(20, finished)
        pool.bind(asyncio.get_running_loop())
        jobs = [pool.submit(job_for(Run(f"b{i}"), barrier.wait)) for i in range(20)]
        await settle_all(pool, jobs, finished, timeout=30)
        pool.close()
        assert all(exc is None for _, _, exc in finished)

    asyncio.run(main())


def test_quick_jobs_do_not_wake_a_thread_per_job():
    async def main():
        finished = Settled()
        pool = ThreadPool(100, finished, stall=60.0)  # no watchdog wake-ups in this test
        pool.bind(asyncio.get_running_loop())
        jobs = [pool.submit(job_for(Run(f"t{i}"), read_var)) for i in range(200)]
        await settle_all(pool, jobs, finished)
        pool.close()
        assert pool.wakeups == 1  # one batch, one thread

    asyncio.run(main())


def test_inline_pool_yields_to_the_loop_between_slices():
    order: list[str] = []

    def slow(name: str) -> None:
        time.sleep(0.004)
        order.append(name)

    async def main():
        finished = Settled()
        pool = InlinePool(finished, slice_seconds=0.005)
        pool.bind(asyncio.get_running_loop())
        jobs = [pool.submit(job_for(Run(f"s{i}"), slow, f"s{i}")) for i in range(10)]
        asyncio.get_running_loop().call_soon(order.append, "loop")
        await settle_all(pool, jobs, finished)
        assert len(order) == 11 and order[0] == "s0" and order[-1] == "s9"
        assert "loop" in order[1:-1]  # the loop ran between two slices, not after the last job

    asyncio.run(main())


def test_a_job_arriving_while_every_thread_blocks_gets_a_thread_at_once():
    """No wait for the watchdog (switched off here): the new job finds the only working thread
    inside a handler for a while, so it wakes another."""
    release = threading.Event()

    async def main():
        finished = Settled()
        pool = ThreadPool(4, finished, stall=60.0)
        pool.bind(asyncio.get_running_loop())
        blocker = pool.submit(job_for(Run("blocker"), release.wait, 30))
        while blocker.state != 1:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        late = pool.submit(job_for(Run("late"), read_var))
        end = time.monotonic() + 10
        while not late.done():
            assert time.monotonic() < end, "the new job waited for the blocked thread"
            await asyncio.sleep(0.001)
        assert not blocker.done()
        release.set()
        await settle_all(pool, [blocker, late], finished)
        pool.close()

    asyncio.run(main())
