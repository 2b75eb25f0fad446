"""Faults around rate and concurrency limits (fault-matrix rows W12-W13): ``fault_app:limited``,
an App whose "limited" task has concurrency_limit=3 and whose "rated" task has rate_limit="20/s"."""
from __future__ import annotations

import os
import signal
import time

from harness import wait

from fastq import keys
from fastq._codec import decode_message


def peak_running(h, killed: dict[int, float]) -> int:
    """Most handler runs at once, from the ledger: each start until the end of that task in that
    process, or until its process was killed."""
    rows = list(h.ledger.db.execute("SELECT task_id, event, pid, at FROM runs ORDER BY at"))
    edges = []
    for i, (tid, event, pid, at) in enumerate(rows):
        if event != "start":
            continue
        end = next((a for t, e, p, a in rows[i + 1:] if t == tid and p == pid and e == "end"), None)
        if end is None:
            end = killed.get(pid, float("inf"))
        edges += [(at, 1), (end, -1)]
    peak = running = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def test_w12_sigkill_a_worker_holding_concurrency_slots(h):
    """W12: kill -9 a worker while it runs tasks of a type limited to 3 at once (2 workers, 60
    tasks of 0.5 s). The killed runs' slots are not counted twice when their tasks run again, the
    limit holds throughout, nothing is lost, and every slot is free at the end."""
    h.enqueue(60, kind="limited", sleep=0.5)
    sup = h.supervisor(2, target="fault_app:limited")
    h.wait_workers(sup, 2)
    killed: dict[int, float] = {}
    for _ in range(2):
        def busy() -> int | None:
            ended = h.ledger.ids("end")
            live = set(h.workers(sup)) - set(killed)
            for tid, pid in h.ledger.db.execute("SELECT task_id, pid FROM runs WHERE event='start'"):
                if pid in live and tid not in ended:
                    return pid
            return None

        pid = wait(busy, 30, "a worker running a limited task")
        killed[pid] = time.time()
        os.kill(pid, signal.SIGKILL)
        wait(lambda: pid not in h.workers(sup) and len(h.workers(sup)) == 2, 15, "replacement")
    h.quiesce(120)
    assert h.stop(sup) == 0
    report = h.report()
    report.assert_ok(max_duplicates=2 * 3)  # at most the slots the killed worker held, per kill
    assert report.completed == 60
    peak = peak_running(h, killed)
    assert peak == 3, peak  # never above the limit, and reached
    wait(lambda: h.r.zcard(keys.slots_key("default", "limited")) == 0, 10, "every slot free")
    print(f"W12: peak {peak} running (limit 3), duplicates {len(report.duplicated)} after 2 SIGKILLs")


def test_w13_sigkill_the_fleet_while_rate_limited_tasks_wait(h):
    """W13: kill -9 the whole supervisor group while most of 200 "rated" tasks (20/s) wait in
    ``scheduled`` for their reserved slot; a new supervisor runs them all, still at 20/s. Waiting
    tasks are plain scheduled tasks: the kill costs them nothing (``retried`` stays 0)."""
    ids = h.enqueue(200, kind="rated")
    sup = h.supervisor(2, target="fault_app:limited")
    wait(lambda: len(h.ledger.ids("start")) >= 20, 30, "20 starts")
    os.killpg(sup.pid, signal.SIGKILL)
    sup.wait(10)
    waiting = [m.decode() for m in h.r.zrange(keys.scheduled_key("default"), 0, -1)]
    assert len(waiting) > 100
    for tid in waiting[:20]:
        task = h.r.hgetall(keys.task_key("default", tid))
        assert task[b"state"] == b"scheduled" and b"fastq_rate_at" in task and b"lease_token" not in task
        assert decode_message(task[b"msg"]).retried == 0
    restarted = time.time()
    sup2 = h.supervisor(2, target="fault_app:limited")
    h.quiesce(90)
    assert h.stop(sup2) == 0
    report = h.report()
    report.assert_ok(max_duplicates=10)  # only runs in flight at the kill run again
    assert report.completed == len(ids)
    after = sorted(at for (at,) in h.ledger.db.execute("SELECT at FROM runs WHERE event='start' AND at >= ?",
                                                        (restarted,)))
    # reservations that come back within RESERVATION_GRACE (2 s) of their time run at once: judge the
    # pace after that
    steady = [t for t in after if t >= after[0] + 3.0]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert len(steady) > 100 and rate <= 20 * 1.1, (len(steady), rate)
    print(f"W13: {len(waiting)} tasks waited through the kill; {len(after)} ran after the restart at {rate:.1f}/s "
          f"(limit 20/s); duplicates {len(report.duplicated)}")
