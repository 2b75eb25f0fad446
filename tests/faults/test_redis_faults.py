"""Redis faults (rows R1-R13) and network faults through a proxy (rows N1-N4)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from harness import Harness, wait
from proxy import Proxy

import fastq
from fastq import keys


def _stop_redis(h, seconds: float) -> None:
    os.kill(h.server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(h.server.proc.pid, signal.SIGCONT)


def test_r1_redis_paused_briefly_then_restarted_with_data(tmp_path):
    h = Harness(tmp_path, redis_args=["--appendonly", "yes", "--appendfsync", "everysec"])
    try:
        h.enqueue(600, sleep=0.02)
        sup = h.supervisor(2)
        wait(lambda: len(h.ledger.ids("end")) > 50, 20, "progress")
        _stop_redis(h, 2.0)  # shorter than the lease: nothing is reclaimed
        wait(lambda: len(h.ledger.ids("end")) > 300, 30, "progress after the pause")
        h.r.shutdown(save=True)  # graceful restart on the same port and dir (AOF kept)
        h.server.proc.wait(10)
        h.server.start()
        h.r = redis.Redis.from_url(h.url)
        t0 = time.monotonic()
        h.quiesce(60)
        print(f"R1 drained {time.monotonic() - t0:.1f}s after the restart")
        wait(lambda: "Redis restarted" in h.log(sup), 10, "restart noticed by the next heartbeat")
        assert h.stop(sup) == 0
        report = h.report()
        report.assert_ok(max_duplicates=40)
        log = h.log(sup)
        assert log.count("Traceback") == 0
        # the data came back from the AOF: a WARNING saying so, not the ERROR about lost tasks
        assert "reloaded its data (append-only file)" in log and "are lost" not in log
    finally:
        h.close()


def test_r2_restart_without_persistence_is_survived(h):
    h.enqueue(100, sleep=0.01)
    sup = h.supervisor(1)
    h.quiesce(30)
    h.r.shutdown(nosave=True)
    h.server.proc.wait(10)
    h.server.start()
    h.r = redis.Redis.from_url(h.url)
    time.sleep(1)
    ids = h.enqueue(50, sleep=0.01)  # new tasks after the data loss are processed
    wait(lambda: set(ids) <= h.ledger.ids("end"), 30, "new tasks after the restart")
    wait(lambda: "Redis restarted" in h.log(sup), 10, "restart noticed by the next heartbeat")
    log = h.log(sup)
    # one line when Redis went away and one when it came back, not one per failed retry
    assert log.count("Redis unreachable") <= 1 and log.count("Redis reachable again") <= 1
    assert log.count("Redis unreachable") == log.count("Redis reachable again")
    assert h.stop(sup) == 0
    log = h.log(sup)
    assert "Redis restarted" in log and "Traceback" not in log
    assert "with no persisted data to reload: the tasks it held are lost" in log


def test_r3_redis_killed_with_aof_loses_no_acknowledged_task(tmp_path):
    h = Harness(tmp_path, redis_args=["--appendonly", "yes", "--appendfsync", "always"])
    try:
        h.enqueue(400, sleep=0.05)
        sup = h.supervisor(2)
        wait(lambda: len(h.ledger.ids("end")) > 50, 20, "progress")
        h.server.proc.kill()  # kill -9 redis-server under load
        h.server.proc.wait(10)
        h.server.start()
        h.r = redis.Redis.from_url(h.url)
        h.quiesce(60)
        assert h.stop(sup) == 0
        h.report().assert_ok(max_duplicates=40)
    finally:
        h.close()


def test_r5_script_cache_flushed_every_100ms(h):
    ids = h.enqueue(1500, sleep=0)
    sup = h.supervisor(2)
    end = time.monotonic() + 6
    while time.monotonic() < end and h.backlog():
        h.r.script_flush()
        time.sleep(0.1)
    h.quiesce(30)
    assert h.stop(sup) == 0
    report = h.report()
    report.assert_ok()
    assert report.completed == len(ids)
    assert "Traceback" not in h.log(sup)


def test_r6_connections_killed_repeatedly_and_cancel_still_works(h):
    h.enqueue(1000, sleep=0.005)
    sup = h.supervisor(2)
    for _ in range(8):
        time.sleep(0.5)
        h.r.client_kill_filter(_type="normal", skipme=True)
        h.r.client_kill_filter(_type="pubsub", skipme=True)
    h.quiesce(30)
    clients = h.r.info("clients")["connected_clients"]
    assert clients <= 2 * 8 + 4, clients  # no connection leak across reconnects
    long = h.enqueue_one(sleep=60, max_retry=0)
    wait(lambda: long in h.ledger.ids("start"), 10, "long task running")
    time.sleep(1.0)  # the cancel listener re-subscribes after the kills (back-off <= 0.8 s here)
    wait(lambda: h.r.publish(keys.CANCEL_CHANNEL, long) >= 2 or None, 10, "both workers subscribed")
    wait(lambda: h.r.zcard(keys.archived_key("default")) == 1, 10, "cancelled task archived")
    from fastq._codec import decode_message

    assert decode_message(h.r.hget(keys.task_key("default", long), "msg")).error_msg == "context canceled"
    assert h.stop(sup) == 0
    h.report().assert_ok(max_duplicates=20)


def test_r7_workers_start_on_a_full_redis_and_drain_it(h):
    """R7: Redis is at maxmemory (noeviction) before the supervisor starts. Enqueues fail clearly,
    yet workers start (their start-up writes are best-effort), drain the backlog - which is what
    frees memory - and run tasks longer than the lease exactly once. The log says "Redis is full",
    not "unreachable", and not once per retry."""
    quick = h.enqueue(3000, sleep=0)
    long = h.enqueue(4, sleep=7)  # longer than the lease (5 s)
    h.r.config_set("maxmemory-policy", "noeviction")
    h.r.config_set("maxmemory", h.r.info("memory")["used_memory"] - 64 * 1024)
    with pytest.raises(fastq.errors.BrokerFullError, match="out of memory"):
        h.client.enqueue(fastq.Task("work", b"{}"))
    with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
        h.r.sadd(keys.ALL_QUEUES, "probe")  # the write a starting worker used to wait on forever
    sup = h.supervisor(2)
    try:
        wait(lambda: set(long) <= h.ledger.ids("start"), 30, "the long tasks started on a full Redis")
        wait(lambda: set(quick) <= h.ledger.ids("end"), 30, "3,000 tasks drained from a full Redis")
        wait(lambda: set(long) <= h.ledger.ids("end"), 30, "the long tasks completed")
    finally:
        h.r.config_set("maxmemory", 0)
    h.quiesce(30)
    assert h.stop(sup) == 0
    report = h.report()
    report.assert_ok(max_duplicates=0)
    assert all(h.ledger.counts("start")[t] == 1 for t in long)
    log = h.log(sup)
    assert "Redis unreachable" not in log, log[-3000:]
    assert 1 <= log.count("Redis is full (maxmemory)") <= 2, log[-3000:]  # once per worker process at most
    assert "Traceback" not in log


def test_r8_eviction_policy_warning(tmp_path):
    h = Harness(tmp_path, redis_args=["--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru"])
    try:
        sup = h.supervisor(1)
        h.wait_workers(sup, 1)
        wait(lambda: "maxmemory-policy is 'allkeys-lru'" in h.log(sup), 10, "warning")
        h.stop(sup)
    finally:
        h.close()


def test_r12_redis_stalls_longer_than_the_lease(h):
    """Workers stop handlers whose lease they cannot vouch for; fencing keeps completions single."""
    ids = h.enqueue(10, sleep=12)
    sup = h.supervisor(1)
    wait(lambda: len(h.ledger.ids("start")) == 10, 20, "running")
    _stop_redis(h, 8.0)  # lease is 5 s
    h.quiesce(60)
    assert h.stop(sup) == 0
    report = h.report()
    report.assert_ok(max_duplicates=10)
    assert report.completed == len(ids)
    assert "lease lost" in h.log(sup)


def test_n1_short_partition_causes_no_reclaim(h):
    proxy = Proxy(h.server.port)
    try:
        ids = h.enqueue(6, sleep=4)
        sup = h.supervisor(1, url=proxy.url)
        wait(lambda: len(h.ledger.ids("start")) == 6, 20, "running")
        proxy.mode = "blackhole"
        time.sleep(0.4 * 5)
        proxy.mode = "pass"
        h.quiesce(30)
        assert h.stop(sup) == 0
        report = h.report()
        report.assert_ok(max_duplicates=0)
        assert report.completed == len(ids)
    finally:
        proxy.close()


def test_n2_partition_longer_than_the_lease_is_fenced(h):
    """The isolated worker's tasks are reclaimed by a healthy one; its late results are rejected."""
    proxy = Proxy(h.server.port)
    try:
        ids = h.enqueue(4, sleep=6)
        isolated = h.supervisor(1, url=proxy.url)
        wait(lambda: len(h.ledger.ids("start")) == 4, 20, "running on the isolated worker")
        proxy.mode = "blackhole"
        healthy = h.supervisor(1)
        wait(lambda: len(h.ledger.ids("end")) == 4, 40, "completion by the healthy worker")
        proxy.mode = "pass"
        time.sleep(4)
        h.quiesce(30)
        for proc in (isolated, healthy):
            h.stop(proc)
        report = h.report()
        report.assert_ok(max_duplicates=4)
        assert report.completed == len(ids)
    finally:
        proxy.close()


def test_n3_slow_link_keeps_leases(h):
    proxy = Proxy(h.server.port)
    proxy.mode, proxy.delay = "delay", 0.3
    try:
        ids = h.enqueue(20, sleep=7)
        sup = h.supervisor(1, "--lease-duration", "8", url=proxy.url)  # the production default lease
        h.quiesce(60)
        assert h.stop(sup) == 0
        report = h.report()
        report.assert_ok(max_duplicates=0)  # heartbeats at 300 ms each way still land within the lease
        assert report.completed == len(ids)
    finally:
        proxy.close()


def test_r4_rdb_only_loss_is_exactly_what_came_after_the_snapshot(tmp_path):
    h = Harness(tmp_path, redis_args=["--save", "3600 1"])
    try:
        saved = h.enqueue(300, sleep=0)
        h.r.save()
        after = h.enqueue(200, sleep=0)
        h.server.proc.kill()  # kill -9 redis-server: only the snapshot survives
        h.server.proc.wait(10)
        h.server.start()
        h.r = redis.Redis.from_url(h.url)
        present = {x.decode() for x in h.r.lrange(keys.pending_key("default"), 0, -1)}
        assert present == set(saved)  # the loss is exactly the tasks acknowledged after the save
        assert not present & set(after)
        from fastq import doctor

        assert doctor.check(h.r, "default") == []  # no half-written task survives
    finally:
        h.close()


def test_n4_clock_skew_causes_no_premature_reclaim_and_schedules_by_redis_time(h):
    from harness import faketime_env

    if faketime_env("+0") is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    ids = h.enqueue(6, sleep=7)  # longer than the 5 s lease: kept alive only by extensions
    ahead = h.supervisor(1, env=faketime_env("+90s"))
    behind = h.supervisor(1, env=faketime_env("-90s"))
    wait(lambda: len(h.ledger.ids("start")) == 6, 20, "running")
    script = ("import fastq, time, sys; c = fastq.Client(sys.argv[1]); "
              "print(c.enqueue(fastq.Task('work', b'{}'), process_in=2).id)")
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", script, h.url], capture_output=True, text=True, check=True,
                         env=dict(os.environ, **faketime_env("+300s")))
    scheduled = out.stdout.strip()
    h.ledger.enqueued([scheduled])
    wait(lambda: scheduled in h.ledger.ids("start"), 15, "the scheduled task")
    started = time.time()  # observed here: the workers' own timestamps are skewed
    h.quiesce(40)
    for proc in (ahead, behind):
        assert h.stop(proc) == 0
    report = h.report()
    report.assert_ok(max_duplicates=0)  # no reclaim although worker clocks are 90 s off
    assert report.completed == len(ids) + 1
    assert 1.0 <= started - t0 <= 5.0, started - t0  # process_in=2 by Redis time, not the client's +300 s
    assert "clock is +90" in h.log(ahead) and "clock is -90" in h.log(behind)


def test_r6b_outage_is_logged_once_not_per_retry(h):
    sup = h.supervisor(1)
    h.wait_workers(sup, 1)
    time.sleep(1.0)
    h.r.shutdown(nosave=True)
    h.server.proc.wait(10)
    time.sleep(3.0)  # every loop fails and retries meanwhile
    h.server.start()
    h.r = redis.Redis.from_url(h.url)
    wait(lambda: "Redis reachable again" in h.log(sup), 15, "the recovery line")
    ids = h.enqueue(20, sleep=0)
    wait(lambda: set(ids) <= h.ledger.ids("end"), 20, "work after the outage")
    assert h.stop(sup) == 0
    log = h.log(sup)
    assert log.count("Redis unreachable") == 1, log
    assert log.count("Redis reachable again") == 1
    assert log.count("WARNING") + log.count("ERROR") < 10, log  # no storm of retry warnings


def test_r13_long_tasks_keep_their_leases_while_redis_is_full(h):
    """R13: tasks longer than the lease run while Redis is at maxmemory (noeviction).

    The heartbeat's server-state write is refused (OOM) while lease extensions (allow-oom) are
    not: the refusal must not cost the running tasks their leases. Each completes once.
    """
    ids = h.enqueue(4, sleep=12)  # lease 5 s
    sup = h.supervisor(2)
    wait(lambda: len(h.ledger.ids("start")) == 4, 20, "all running")
    h.r.config_set("maxmemory-policy", "noeviction")
    h.r.config_set("maxmemory", h.r.info("memory")["used_memory"] + 256 * 1024)
    filler = 0
    with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):  # fill it up to the limit
        while filler < 10_000:
            h.r.set(f"filler:{filler}", b"x" * 16384)
            filler += 1
    # and keep it full: buffers freed later (ours, the workers') must not make room again
    h.r.config_set("maxmemory", h.r.info("memory")["used_memory"] - 1024 * 1024)
    try:
        wait(lambda: set(ids) <= h.ledger.ids("end"), 30, "the long tasks completed while Redis is full")
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            h.r.set("still-full", b"x" * 16384)  # it was full all along
        wait(lambda: not h.r.llen(keys.active_key("default")), 10, "outcomes written while Redis is full")
    finally:
        h.r.config_set("maxmemory", 0)
    h.quiesce(30)
    assert h.stop(sup) == 0
    report = h.report()
    report.assert_ok(max_duplicates=0)
    assert report.completed == len(ids)
    assert all(h.ledger.counts("start")[t] == 1 for t in ids), h.ledger.counts("start")
    assert "lease lost" not in h.log(sup)
