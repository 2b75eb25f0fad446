"""Load and soak rows (L1, L2). Both are marked ``soak``: run them with ``-m soak``."""
from __future__ import annotations

import json
import os
import random
import signal
import time

import psutil
import pytest

import fastq
from fastq import keys

pytestmark = pytest.mark.soak


def test_l1_million_task_backlog(h):
    n = int(os.environ.get("FASTQ_L1_TASKS", "1000000"))
    payload = b"x" * 150
    t0 = time.monotonic()
    client = fastq.Client(h.url, chunk_size=2000)
    for start in range(0, n, 100_000):
        ids = [i.id for i in client.enqueue_many([fastq.Task("work", json.dumps({"pad": payload.decode()}).encode())]
                                                 * min(100_000, n - start))]
        h.ledger.enqueued(ids)
    enqueue_s = time.monotonic() - t0
    h.r.slowlog_reset()
    t1 = time.monotonic()
    sups = [h.supervisor(2), h.supervisor(2)]
    h.quiesce(1800)
    drain_s = time.monotonic() - t1
    for s in sups:
        assert h.stop(s) == 0
    slowest = max((e["duration"] for e in h.r.slowlog_get(128)), default=0) / 1000
    report = h.report()
    report.assert_ok()
    print(f"L1: {n:,} tasks enqueued at {n / enqueue_s:,.0f}/s, drained at {n / drain_s:,.0f}/s; "
          f"slowest command {slowest:.1f} ms")
    assert slowest < 50


def test_l2_soak_with_kills_flushes_and_connection_kills(h):
    seconds = float(os.environ.get("FASTQ_SOAK_SECONDS", "300"))
    sup = h.supervisor(2, "--concurrency", "50")
    h.wait_workers(sup, 2)
    rss, end = [], time.monotonic() + seconds
    next_kill = next_flush = time.monotonic() + 60
    client_killed = False
    kills = 0
    max_retry = 1
    planned_failures: set[str] = set()
    while time.monotonic() < end:
        specs = [{"sleep": random.uniform(0.001, 0.05), "then": "fail" if random.random() < 0.01 else "ok"}
                 for _ in range(200)]
        for spec in specs:
            tid = h.client.enqueue(fastq.Task("work", json.dumps(spec).encode()), max_retry=max_retry, timeout=5).id
            h.ledger.enqueued([tid])
            if spec["then"] == "fail":
                # runs max_retry + 1 times by design, then is archived: those re-runs are no duplicates
                h.ledger.plan([tid], max_retry + 1)
                planned_failures.add(tid)
        now = time.monotonic()
        if now >= next_kill:
            victim = random.choice(h.workers(sup))
            os.kill(victim, signal.SIGKILL)
            kills += 1
            next_kill = now + 60
        if now >= next_flush:
            h.r.script_flush()
            next_flush = now + 300
        if not client_killed and now > end - seconds / 2:
            h.r.client_kill_filter(_type="normal", skipme=True)
            client_killed = True
        rss.append(sum(psutil.Process(p).memory_info().rss for p in h.workers(sup)) / 2**20)
        time.sleep(1)
    h.quiesce(300)
    assert h.stop(sup) == 0
    report = h.report()
    print(f"L2: {report.enqueued} tasks over {seconds:.0f}s ({len(planned_failures)} planned failures), "
          f"{kills} worker kill(s), duplicates beyond the plan {len(report.duplicated)} "
          f"({len(set(report.duplicated) & planned_failures)} of them planned failures), "
          f"worker RSS first/last {rss[0]:.0f}/{rss[-1]:.0f} MB")
    # only tasks in flight on a killed worker (concurrency 50) run more often than planned
    report.assert_ok(max_duplicates=kills * 50)
    # every planned failure ran out of retries and was archived, never completed
    archived = {x.decode() for x in h.r.zrange(keys.archived_key(h.queue), 0, -1)}
    assert planned_failures <= archived, f"{len(planned_failures - archived)} planned failure(s) not archived"
    assert not planned_failures & h.ledger.ids("end")
