"""TaskRef.result() / aresult(): the return value of an App task, woken by the worker's
acknowledgement notice (no polling), TaskFailedError on archive, TimeoutError on timeout.

Workers are real (fastq.testing.WorkerHarness in a thread) on the test session's Redis.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

import fastq
from fastq import keys
from fastq.app.ref import TaskRef
from fastq.testing import WorkerHarness


@dataclass
class Total:
    count: int
    label: str


@pytest.fixture
def app(redis_url):
    application = fastq.App(redis_url)
    yield application
    application.close()


def _drain_soon(app: fastq.App, redis_url: str, delay: float = 0.3, **kwargs: object) -> threading.Thread:
    """Run a worker after ``delay`` seconds, so the waiter is already waiting when tasks finish."""
    def run() -> None:
        time.sleep(delay)
        WorkerHarness(app, redis_url, **kwargs).drain(timeout=20)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _commands(r, name: str) -> int:
    stats = r.info("commandstats").get(f"cmdstat_{name}")
    return int(stats["calls"]) if stats else 0


def test_result_waits_for_the_worker_and_decodes_by_the_return_annotation(app, r, redis_url):
    @app.task(name="sum")
    async def add(a: int, b: int) -> Total:
        return Total(a + b, "sum")

    @app.task(name="blob")
    def blob(n: int) -> bytes:
        return bytes(range(n))

    @app.task(name="nothing")
    def nothing() -> None:
        pass

    refs = [add.enqueue(2, 3), blob.enqueue(4), nothing.enqueue()]
    worker = _drain_soon(app, redis_url)
    r.config_resetstat()
    assert refs[0].result(timeout=15) == Total(5, "sum")
    assert refs[1].result(timeout=15) == b"\x00\x01\x02\x03"
    assert refs[2].result(timeout=15) is None
    worker.join()
    # woken by the notice: the waiter read each task hash at most twice (on subscribing, on the notice)
    assert _commands(r, "hmget") <= 2 * len(refs)


def test_an_archived_task_raises_task_failed_error_with_asynqs_error_text(app, redis_url):
    @app.task(name="boom", retry_on=(IOError,))
    def boom(x: int) -> int:
        raise ValueError(f"bad value {x}")

    ref = boom.enqueue(7)
    worker = _drain_soon(app, redis_url)
    with pytest.raises(fastq.TaskFailedError) as failed:
        ref.result(timeout=15)
    worker.join()
    assert failed.value.task_id == ref.id and failed.value.queue == ref.queue
    assert "bad value 7" in failed.value.error and failed.value.state == "archived"


def test_a_retried_task_is_waited_for_until_it_completes(app, redis_url):
    attempts = []

    @app.task(name="flaky", retry_backoff=fastq.Backoff(base=0.5, factor=1, max=1, jitter=0))
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise IOError("not yet")
        return "third time"

    ref = flaky.enqueue()
    worker = _drain_soon(app, redis_url, run_retries=True)
    assert ref.result(timeout=20) == "third time"
    worker.join()
    assert len(attempts) == 3


def test_result_times_out_without_a_worker_and_keeps_no_waiter(app, r):
    @app.task(name="never")
    def never() -> int:
        return 1

    ref = never.enqueue()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=ref.id):
        ref.result(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    with pytest.raises(ValueError, match="timeout"):
        ref.result(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        ref.result(timeout="soon")  # type: ignore[arg-type]


def test_a_task_finished_before_the_wait_returns_at_once(app, redis_url):
    @app.task(name="early")
    def early(x: int) -> int:
        return x * 2

    ref = early.enqueue(21)
    WorkerHarness(app, redis_url).drain(timeout=10)
    assert ref.result(timeout=5) == 42


def test_many_async_waiters_share_one_subscription(app, r, redis_url):
    queue = "fanout"

    @app.task(name="square", queue=queue)
    async def square(x: int) -> int:
        return x * x

    async def main() -> list[int]:
        try:
            refs = [await square.aenqueue(i) for i in range(200)]
            waits = [asyncio.ensure_future(ref.aresult(timeout=20)) for ref in refs]
            await asyncio.sleep(0.3)
            subscribers = dict(r.pubsub_numsub(keys.settled_channel(queue)))[keys.settled_channel(queue).encode()]
            assert subscribers == 1
            await asyncio.to_thread(WorkerHarness(app, redis_url, queues={queue: 1}).drain, queue, 20)
            return await asyncio.gather(*waits)
        finally:
            await app.aclose()  # also when an assert fails: no connection left for the GC to report

    assert asyncio.run(main()) == [i * i for i in range(200)]


def test_eager_results_return_at_once(app):
    @app.task(name="eager:double")
    def double(x: int) -> int:
        return 2 * x

    with app.eager():
        ref = double.enqueue(4)
    assert ref.result(timeout=0) == 8
    assert asyncio.run(ref.aresult()) == 8


def test_a_ref_made_by_hand_cannot_wait(app):
    info = fastq.Client(app.redis_url).enqueue(fastq.Task("plain"))
    with pytest.raises(RuntimeError, match="not made by an App task"):
        TaskRef(info).result(timeout=1)


def test_a_ref_rebuilt_from_an_id_waits_like_the_original(app, redis_url):
    @app.task(name="late", queue="later")
    def late(x: int) -> int:
        return x + 1

    task_id = late.enqueue(41).id  # e.g. sent to a browser, which asks again later
    worker = _drain_soon(app, redis_url, queues={"later": 1})
    ref = late.ref(task_id)
    assert (ref.id, ref.queue, ref.type) == (task_id, "later", "late")
    assert ref.result(timeout=15) == 42
    worker.join()
    with pytest.raises(ValueError, match="task_id"):
        late.ref("")
