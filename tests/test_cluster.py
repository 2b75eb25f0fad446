"""fastq on a real Redis Cluster: three masters (local redis-server processes, started once).

Queues are chosen so that they live on three different masters. Every path runs for real:
client enqueue / enqueue_many (single, batched, unique, scheduled, group), worker dequeue,
acks, retries, archive, retention and janitor, lease extension and recovery, supervisor
recovery, group aggregation, heartbeat, cancel and wake-up over pub/sub, the Inspector and
the ``fastq`` CLI, and a slot migration under load (MOVED / ASK / TRYAGAIN). After each, the
nodes' own counters must show no CROSSSLOT error and no failed command other than NOSCRIPT
(a node that never saw a script) - so "cluster-safe" is checked by Redis, not by reading code.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis
from helpers import RunningWorker, async_wait_for, wait_for
from redis.crc import key_slot
from topology import Cluster

import fastq
from fastq import doctor, keys
from fastq._rdb.worker import Broker, is_cluster
from fastq.connection import ClusterUnavailableError, ConnectionConfigError, RedisClusterClientOpt
from fastq.server.config import WorkerConfig

pytestmark = pytest.mark.slow


def spread_queues(cluster: Cluster, n: int = 3) -> list[str]:
    """``n`` queue names whose slots sit on ``n`` different masters."""
    picked, nodes = [], set()
    for i in range(1000):
        name = f"q{i}"
        node = cluster.node_of_slot(key_slot(keys.pending_key(name).encode()))
        if node.port not in nodes:
            picked.append(name)
            nodes.add(node.port)
        if len(picked) == n:
            return picked
    raise AssertionError("could not spread queues over the masters")


def command_failures(cluster: Cluster) -> dict:
    """Failed or rejected calls per command over every node, and the error counts by type."""
    failed: dict[str, int] = {}
    for node in cluster.nodes:
        if not node.alive:
            continue
        c = node.client()
        try:
            for name, st in c.info("commandstats").items():
                n = int(st.get("failed_calls", 0))
                if n:
                    failed[name.replace("cmdstat_", "")] = failed.get(name, 0) + n
        finally:
            c.close()
    return failed


def assert_cluster_clean(cluster: Cluster) -> dict:
    """No CROSSSLOT anywhere, and the only failed command is EVALSHA answered NOSCRIPT."""
    errors = cluster.error_stats()
    assert errors.get("CROSSSLOT", 0) == 0, errors
    failed = command_failures(cluster)
    assert set(failed) <= {"evalsha"}, failed
    assert failed.get("evalsha", 0) <= errors.get("NOSCRIPT", 0), (failed, errors)
    return errors


# ---------------------------------------------------------------- clients

def test_cluster_urls_and_options_make_lazy_cluster_clients(cluster):
    url = cluster.url
    sync = fastq.connection.sync_client(url)
    assert is_cluster(sync) and "not connected" in repr(sync)
    assert sync.ping() is True
    sync.close()
    opt = fastq.connection.parse_url(url)
    assert isinstance(opt, RedisClusterClientOpt) and len(opt.addrs) == 3
    async def use():
        client = fastq.connection.async_client(opt)
        assert is_cluster(client) and Broker(client).cluster
        assert await client.ping() is True
        await client.aclose()
    asyncio.run(use())
    # nothing listens there: building is fine, the first command fails with a typed connection error
    dead = fastq.connection.sync_client("redis+cluster://127.0.0.1:1")
    with pytest.raises(ClusterUnavailableError):
        dead.ping()
    assert isinstance(ClusterUnavailableError("x"), redis.ConnectionError)


def test_a_hand_built_redis_py_cluster_client_is_refused_with_the_reason(cluster):
    raw = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        with pytest.raises(ConnectionConfigError, match="redis\\+cluster://"):
            fastq.Client(raw)
        with pytest.raises(ConnectionConfigError, match="pipelines refuse the script calls"):
            fastq.Inspector(raw)
    finally:
        raw.close()


# ---------------------------------------------------------------- the whole life cycle

class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []
        self.batches: list[bytes] = []

    async def __call__(self, task: fastq.Task) -> bytes | None:
        self.runs.append((fastq.get_task_id(), fastq.get_queue_name()))
        if task.type == "fail":
            raise RuntimeError("planned")
        if task.type == "slow" or (task.type == "ok" and task.payload.startswith(b"0.")):
            await asyncio.sleep(float(task.payload))  # "slow": past several lease extensions
        if task.type == "batch":
            self.batches.append(task.payload)
        return b"kept" if task.type == "keep" else None

    def ids(self) -> set[str]:
        return {tid for tid, _ in self.runs}


def _aggregate(group: str, tasks: list[fastq.Task]) -> fastq.Task:
    return fastq.Task("batch", group.encode() + b"=" + b",".join(t.payload for t in tasks))


def test_enqueue_drain_retry_schedule_group_retention_across_three_masters(fresh):
    queues = spread_queues(fresh)
    client = fastq.Client(fresh.url)
    plain, special = [], {}
    for q in queues:
        plain += [i.id for i in client.enqueue_many([fastq.Task("ok", b"%d" % n) for n in range(150)], queue=q)]
        special[q] = {
            "one": client.enqueue(fastq.Task("ok", b"single"), queue=q).id,
            "unique": client.enqueue(fastq.Task("ok", b"u"), queue=q, unique=60).id,
            "later": client.enqueue(fastq.Task("ok", b"later"), queue=q, process_in=1).id,
            "fail": client.enqueue(fastq.Task("fail"), queue=q, max_retry=1).id,
            "keep": client.enqueue(fastq.Task("keep"), queue=q, retention=1).id,
            "slow": client.enqueue(fastq.Task("slow", b"2.5"), queue=q).id,
        }
        for p in (b"a", b"b", b"c"):
            client.enqueue(fastq.Task("item", p), queue=q, group="g")
    scheduled_many = client.enqueue_many([fastq.Task("ok", b"s")] * 20, queue=queues[0], process_in=1)

    async def produce_async() -> list[str]:
        async with fastq.AsyncClient(fresh.url) as ac:
            return [i.id for i in await ac.enqueue_many([fastq.Task("ok", b"async")] * 30, queue=queues[1])]
    plain += asyncio.run(produce_async())
    with pytest.raises(fastq.errors.DuplicateTaskError):
        client.enqueue(fastq.Task("ok", b"u"), queue=queues[0], unique=60)

    handler = Recorder()
    expected_ok = set(plain) | {i.id for i in scheduled_many} | {
        special[q][k] for q in queues for k in ("one", "unique", "later", "keep", "slow")}

    async def main():
        async with RunningWorker(handler, fresh.url, queues={q: 1 for q in queues}, lease_duration=3,
                                 group_aggregator=_aggregate, group_grace_period=1, janitor_interval=0.3,
                                 retry_delay=lambda n, e=None, t=None: 0.5):
            await async_wait_for(lambda: expected_ok <= handler.ids() and len(handler.batches) == 3
                                 and all(fresh_count(q) == 0 for q in queues), timeout=25, what="drain")
            servers = fastq.Inspector(fresh.url).servers()  # the heartbeat registered it
            assert len(servers) == 1 and servers[0].queues == {q: 1 for q in queues}

    def fresh_count(q: str) -> int:  # tasks still moving (pending, active, scheduled, retry, completed)
        r = client.redis
        return (r.llen(keys.pending_key(q)) + r.llen(keys.active_key(q)) + r.zcard(keys.scheduled_key(q))
                + r.zcard(keys.retry_key(q)) + r.zcard(keys.completed_key(q)))

    asyncio.run(main())
    runs = [tid for tid, _ in handler.runs]
    assert len(runs) == len(set(runs)) + len(queues)  # no re-runs; each failing task ran twice (max_retry=1)
    # members added in the same second share a score: the set comes in task-ID order, as in Go
    assert sorted(sorted(b.split(b"=")[1].split(b",")) for b in handler.batches) == [[b"a", b"b", b"c"]] * 3
    ins = fastq.Inspector(fresh.url)
    for q in queues:
        info = ins.get_queue_info(q)
        assert (info.pending, info.active, info.retry, info.archived, info.completed) == (0, 0, 0, 1, 0), info
        archived = ins.get_task_info(q, special[q]["fail"])
        assert archived.state.value == "archived" and archived.retried == 1
        assert archived.last_err == "RuntimeError: planned"
        assert info.processed_total == 150 + 7 + (30 if q == queues[1] else 0) + (20 if q == queues[0] else 0) + 1
        assert doctor.check(client.redis, q) == []
        assert {q2 for _, q2 in handler.runs} == set(queues)
    assert sorted(ins.queues()) == sorted(queues)
    errors = assert_cluster_clean(fresh)
    client.close()
    print(f"cluster errorstats after the life cycle: {errors}")


def test_lease_recovery_and_supervisor_recovery_per_queue(fresh):
    from fastq.server.processor import Processor
    from fastq.server.recoverer import recover_once
    from fastq.server.recovery import recover_worker

    queues = spread_queues(fresh)
    client = fastq.Client(fresh.url)
    for q in queues:
        client.enqueue_many([fastq.Task("ok")] * 4, queue=q)
    dead, expired = str(uuid.uuid4()), str(uuid.uuid4())
    cfg = WorkerConfig(redis_url=fresh.url, queues={q: 1 for q in queues}, lease_duration=3)

    async def claim(server_id: str, lease: int) -> int:
        redis_ = fastq.connection.async_client(fresh.url)
        broker = Broker(redis_)
        got = 0
        for i, q in enumerate(queues):
            got += len(await broker.dequeue([q], 2, lease, f"{server_id}:{i}"))
        await redis_.aclose()
        return got

    assert asyncio.run(claim(dead, 30)) == 6
    # the supervisor's path (sync client): the dead worker's claims go to retry at once
    assert recover_worker(cfg, dead, 4242, "killed by SIGKILL") == 6
    for q in queues:
        assert client.redis.zcard(keys.retry_key(q)) == 2 and client.redis.llen(keys.active_key(q)) == 0

    assert asyncio.run(claim(expired, 1)) == 6
    time.sleep(2.2)  # leases (Redis time, whole seconds) run out

    async def recover() -> int:
        redis_ = fastq.connection.async_client(fresh.url)
        broker = Broker(redis_)
        processor = Processor(broker, lambda t: None, cfg, str(uuid.uuid4()))
        try:
            return await recover_once(broker, processor, cfg)
        finally:
            await redis_.aclose()
    assert asyncio.run(recover()) == 6
    for q in queues:
        assert client.redis.zcard(keys.retry_key(q)) == 4 and client.redis.llen(keys.active_key(q)) == 0
        assert doctor.check(client.redis, q) == []
    assert_cluster_clean(fresh)
    client.close()


# ---------------------------------------------------------------- pub/sub

def test_cancel_and_wakeup_reach_workers_through_one_node(fresh):
    queues = spread_queues(fresh)
    handler = Recorder()

    async def main():
        async with RunningWorker(handler, fresh.url, queues={q: 1 for q in queues}, poll_interval=5.0):
            await asyncio.sleep(0.5)  # the worker is idle, polling every 5 s: only a notification wakes it
            async with fastq.AsyncClient(fresh.url) as ac:
                pickups = []
                for q in queues:  # each queue's notify channel is published on the node owning it
                    t0 = time.monotonic()
                    info = await ac.enqueue(fastq.Task("ok"), queue=q)
                    await async_wait_for(lambda: info.id in handler.ids(), timeout=4, what=f"pickup on {q}")
                    pickups.append(time.monotonic() - t0)
                assert max(pickups) < 1.0, pickups
                long = await ac.enqueue(fastq.Task("slow", b"60"), queue=queues[2], max_retry=0)
                await async_wait_for(lambda: long.id in handler.ids(), timeout=4, what="long task running")
                ins = fastq.AsyncInspector(fresh.url)
                assert await ins.cancel_processing(long.id) >= 0
                await async_wait_for(lambda: client_state(long.id, queues[2]) == "archived", timeout=5,
                                     what="cancelled task archived")
                info = await ins.get_task_info(queues[2], long.id)
                assert info.last_err == "context canceled"
                await ins.close()

    reader = fastq.connection.sync_client(fresh.url)

    def client_state(tid, q):
        raw = reader.hget(keys.task_key(q, tid), "state")
        return raw.decode() if raw else None

    asyncio.run(main())
    reader.close()
    assert_cluster_clean(fresh)


# ---------------------------------------------------------------- Inspector and CLI

def test_inspector_and_cli_work_per_queue_on_the_cluster(fresh):
    from click.testing import CliRunner

    from fastq.cli import main as cli_main

    queues = spread_queues(fresh)
    client = fastq.Client(fresh.url)
    ids, later = {}, {}
    for q in queues:
        ids[q] = [i.id for i in client.enqueue_many([fastq.Task("t", b"%d" % n) for n in range(5)], queue=q)]
        later[q] = [i.id for i in client.enqueue_many([fastq.Task("t")] * 3, queue=q, process_in=3600)]
    ins = fastq.Inspector(fresh.url)
    assert sorted(ins.queues()) == sorted(queues)
    infos = ins.get_queue_infos(queues)
    assert [(i.queue, i.pending, i.scheduled) for i in infos] == [(q, 5, 3) for q in queues]
    q0, q1, q2 = queues
    assert [t.id for t in ins.list_pending_tasks(q0)] == ids[q0]
    assert len(ins.list_scheduled_tasks(q1)) == 3
    assert ins.history(q0, 3)[0].queue == q0
    ins.archive_task(q0, ids[q0][0])
    ins.delete_task(q1, ids[q1][0])
    ins.run_task(q0, ids[q0][0])
    ins.update_task_payload(q2, later[q2][0], b"new")
    assert ins.get_task_info(q2, later[q2][0]).payload == b"new"
    assert ins.run_all_scheduled_tasks(q1) == 3
    assert ins.archive_all_pending_tasks(q2) == 5
    assert ins.delete_all_archived_tasks(q2) == 5
    ins.pause_queue(q0)
    assert ins.get_queue_info(q0).paused
    ins.unpause_queue(q0)
    assert ins.cluster_key_slot(q1) == key_slot(keys.pending_key(q1).encode())
    assert ins.check(q2) > 0
    assert "redis_version" in ins.redis_info() or ins.redis_info()
    ins.delete_all_scheduled_tasks(q2)
    ins.delete_queue(q2)
    assert sorted(ins.queues()) == sorted([q0, q1])

    def fq(*args: str) -> tuple[int, str, str]:
        with CliRunner().isolation() as streams:
            try:
                cli_main(["--redis-url", fresh.url, *args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            return code, streams[0].getvalue().decode(), streams[1].getvalue().decode()

    for args in (["stats"], ["queue", "ls"], ["queue", "inspect", q0, q1], ["queue", "history", q0],
                 ["task", "ls", "--queue", q1, "--state", "pending", "--json"], ["server", "ls"], ["cron", "ls"],
                 ["check", "--queue", q0], ["task", "delete", "-q", q1, "--all", "--state", "pending"],
                 ["enqueue", "t", "{}", "--queue", q0]):
        code, out, err = fq(*args)
        assert code == 0, (args, out, err)
    assert ins.get_queue_info(q1).pending == 0
    assert ins.get_queue_info(q0).pending == 6
    ins.close()
    client.close()
    assert_cluster_clean(fresh)


# ---------------------------------------------------------------- resharding under load

def test_a_queue_slot_migrates_while_tasks_flow_nothing_is_lost(fresh):
    """MOVED / ASK / TRYAGAIN while a producer and a worker run: every acknowledged enqueue runs."""
    (q,) = spread_queues(fresh, 1)
    slot = key_slot(keys.pending_key(q).encode())
    source = fresh.node_of_slot(slot)
    target = next(n for n in fresh.nodes if n is not source)
    with fastq.Client(fresh.url) as pc:  # a backlog, so that the slot holds thousands of keys as it moves
        acked = [i.id for i in pc.enqueue_many([fastq.Task("ok", b"0.005")] * 3000, queue=q)]
        acked += [i.id for i in pc.enqueue_many([fastq.Task("ok", b"0.005")] * 300, queue=q, process_in=1)]
    failed: list[str] = []
    stop = threading.Event()

    def producer() -> None:
        with fastq.Client(fresh.url) as pc:
            while not stop.is_set():
                try:
                    acked.extend(i.id for i in pc.enqueue_many([fastq.Task("ok", b"0.005")] * 20, queue=q))
                except redis.RedisError as exc:  # not acknowledged: the caller would retry
                    failed.append(type(exc).__name__)
                time.sleep(0.005)

    handler = Recorder()

    async def main():
        async with RunningWorker(handler, fresh.url, queues={q: 1}, concurrency=10, batch_size=10):
            thread = threading.Thread(target=producer)
            thread.start()
            await asyncio.sleep(0.3)
            moved = await asyncio.to_thread(fresh.migrate_slot, slot, target, 10, lambda: time.sleep(0.002))
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.to_thread(thread.join)
            await async_wait_for(lambda: set(acked) <= handler.ids(), timeout=30, what="drain after migration")
            return moved

    moved = asyncio.run(main())
    assert fresh.node_of_slot(slot) is target
    assert moved > 1000  # the slot really moved under load
    lost = set(acked) - handler.ids()
    assert not lost, f"lost {len(lost)}"
    r = fastq.connection.sync_client(fresh.url)
    assert doctor.check(r, q) == []
    r.close()
    errors = assert_cluster_clean(fresh)
    assert errors.get("ASK", 0) + errors.get("TRYAGAIN", 0) > 0, errors  # the half-moved slot was hit
    print(f"migration: {moved} keys moved, {len(acked)} acknowledged, 0 lost, {len(failed)} refused enqueue "
          f"batches ({set(failed)}), {len(handler.runs) - len(handler.ids())} re-runs, errorstats {errors}")


# ---------------------------------------------------------------- the scheduler

def test_periodic_scheduler_runs_on_the_cluster(fresh):
    scheduler = fastq.Scheduler(fresh.url, heartbeat_interval=0.5)
    scheduler.register("@every 1s", fastq.Task("tick"), queue="ticks")
    scheduler.start()
    try:
        ins = fastq.Inspector(fresh.url)
        wait_for(lambda: ins.scheduler_entries(), timeout=5, what="entries listed")
        wait_for(lambda: "ticks" in ins.queues() and ins.get_queue_info("ticks").pending >= 1, timeout=5,
                 what="a tick enqueued")
    finally:
        scheduler.stop()


# ---------------------------------------------------------------- throughput (soak: pytest -m soak -s)

BENCH_APP = """
import fastq
mux = fastq.ServeMux()

@mux.handle("noop")
async def noop(task):
    pass
"""


def _drain_rate(url: str, queues: list[str], per_queue: int, workdir, processes: int = 2) -> dict:
    import os
    import subprocess
    import sys

    (workdir / "bench_app.py").write_text(BENCH_APP)
    with fastq.Client(url) as client:
        t0 = time.perf_counter()
        for q in queues:
            for _ in range(per_queue // 1000):
                client.enqueue_many([fastq.Task("noop")] * 1000, queue=q)
        enqueue_s = time.perf_counter() - t0
        total = per_queue // 1000 * 1000 * len(queues)

        def processed() -> int:
            return sum(int(client.redis.get(keys.processed_total_key(q)) or 0) for q in queues)

        proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "bench_app:mux", "--redis-url", url,
                                 "--processes", str(processes), "--concurrency", "100",
                                 "--queues", ",".join(queues), "--log-level", "WARNING"],
                                cwd=workdir, env={**os.environ, "PYTHONPATH": str(workdir)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            first = wait_for(lambda: processed() > 0 and time.perf_counter(), timeout=60, interval=0.005,
                             what="first task done")
            wait_for(lambda: processed() >= total, timeout=300, interval=0.01, what="drained")
            last = time.perf_counter()
        finally:
            proc.terminate()
            proc.wait(30)
    return {"tasks": total, "drain_per_s": round(total / (last - first)), "enqueue_per_s": round(total / enqueue_s)}


@pytest.mark.soak
def test_drain_throughput_three_masters_vs_one_redis(tmp_path, cluster):
    """Drain rate of fastq-supervisor (2 processes x 100) over 3 queues: on the 3-master cluster
    (queues on 3 masters) and on one redis-server with the same queues. Prints both."""
    from helpers import RedisServer

    per_queue = 30_000
    cluster.wait_ok()
    cluster.flushall()
    queues = spread_queues(cluster)
    single = RedisServer(tmp_path / "single")
    (tmp_path / "single").mkdir()
    single.start()
    try:
        results = {}
        for name, url in (("single", single.url), ("cluster", cluster.url)):
            runs = []
            for i in range(2):
                work = tmp_path / f"{name}-{i}"
                work.mkdir()
                if name == "cluster":
                    cluster.flushall()
                else:
                    redis.Redis.from_url(url).flushall()
                runs.append(_drain_rate(url, queues, per_queue, work))
            results[name] = max(runs, key=lambda r: r["drain_per_s"])
        ping = redis.Redis.from_url(single.url)
        t0 = time.perf_counter()
        for _ in range(2000):
            ping.ping()
        ping_rate = 2000 / (time.perf_counter() - t0)
        print(f"\ndrain, {3 * per_queue:,} no-op tasks over 3 queues, fastq-supervisor 2 x 100 "
              f"(best of 2; single-connection PING {ping_rate:,.0f}/s):")
        for name, r in results.items():
            print(f"  {name:8s} drain {r['drain_per_s']:>8,} tasks/s   enqueue_many {r['enqueue_per_s']:>8,} tasks/s")
        assert all(r["drain_per_s"] > 1000 for r in results.values())
    finally:
        single.stop()


def test_workflows_on_the_cluster_stay_in_one_queue(fresh):
    """A workflow's scripts touch one hash slot: its steps must share a queue (refused before
    anything is written otherwise); a chord in one queue runs on the cluster."""
    from fastq.testing import WorkerHarness

    q, other = spread_queues(fresh, 2)
    app = fastq.App(fresh.url)

    @app.task(queue=q)
    def part(i: int) -> int:
        return i

    @app.task(queue=q)
    def join(xs: list[int]) -> int:
        return sum(xs)

    try:
        with pytest.raises(ValueError, match="must share one queue"):
            fastq.chain(part.s(1), join.s().set(queue=other)).enqueue()
        assert list(app.client.redis.scan_iter(match="asynq:*")) == []  # nothing written
        ref = fastq.chord(fastq.group(part.s(i) for i in range(20)), join.s()).enqueue()
        WorkerHarness(app, fresh.url).drain(timeout=30)
        assert ref.result(timeout=10) == sum(range(20))
        assert_cluster_clean(fresh)
    finally:
        app.close()
