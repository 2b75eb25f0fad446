"""Celery: no-op and latency tasks; served by ``celery -A bench.peers.peer_celery worker ...``.

No result backend (Celery's default). Celery keeps no count of finished tasks in Redis, so the
no-op task does ``INCR bench:done`` (one extra round trip per task, included in its drain rate).
``BENCH_PREFETCH`` sets ``worker_prefetch_multiplier`` (default 4).
"""
from __future__ import annotations

import os

from celery import Celery

from bench.peers import _common

ENQUEUE_METHOD = ("Task.apply_async, one at a time with one producer (no batch publish in Celery; "
                  "group().apply_async() measured slower here: 2.6-2.7k/s vs 3.0-3.1k/s)")

app = Celery("bench", broker=_common.redis_url())
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "4")),
    broker_connection_retry_on_startup=True,
    worker_disable_rate_limits=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    _common.count_done_sync()


@app.task(name="bench.record")
def record(sample: int) -> None:
    _common.record_sync(sample)


def make_client():
    return app


def enqueue_noops(_app, n: int) -> None:
    with app.producer_or_acquire() as producer:
        send = noop.apply_async
        for _ in range(n):
            send(producer=producer)


def enqueue_record(_app, sample: int) -> None:
    record.apply_async((sample,))
