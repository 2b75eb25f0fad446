"""fastq through Redis Sentinel: a master, a synced replica and three sentinels, all local processes.

Data nodes and sentinels each have their own password (so every URL form has to carry the right
one to the right place). The group is started once per module; the manual-failover test runs
last and leaves the old replica as the master. Killing the master under load with a ledger is
R9/R10 in tests/faults/test_topology_faults.py.
"""
from __future__ import annotations

import asyncio
import statistics
import time

import pytest
import redis
from helpers import RunningWorker, async_wait_for
from topology import SentinelGroup, wait_until

import fastq
from fastq import keys
from fastq.connection import NotReplicatedError, RedisFailoverClientOpt, parse_url

pytestmark = pytest.mark.slow

DATA_PW = "dataS3CRET"
SENT_PW = "sentS3CRET"


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    g = SentinelGroup(tmp_path_factory.mktemp("sentinel"), data_password=DATA_PW, sentinel_password=SENT_PW).start()
    yield g
    g.stop()


@pytest.fixture
def url(group):
    master = group.current_master().client()
    master.flushall()
    master.close()
    group.wait_synced()
    return group.url(auth=f":{DATA_PW}@", query=f"sentinel_password={SENT_PW}")


def test_every_form_reaches_the_master_and_a_worker_drains_through_sentinel(group, url):
    opt = parse_url(url)
    assert isinstance(opt, RedisFailoverClientOpt) and len(opt.sentinel_addrs) == 3
    as_object = RedisFailoverClientOpt(master_name=group.name, sentinel_addrs=opt.sentinel_addrs,
                                       password=DATA_PW, sentinel_password=SENT_PW)
    ids = []
    for target in (url, as_object, url.replace(f":{DATA_PW}@", f"default:{DATA_PW}@", 1)):
        with fastq.Client(target) as client:
            ids.append(client.enqueue(fastq.Task("t", b"x"), queue="s").id)
    master = group.current_master().client()
    assert master.llen(keys.pending_key("s")) == 3
    seen = []

    async def drain():
        async with RunningWorker(lambda t: seen.append(fastq.get_task_id()), url, queues={"s": 1}):
            await async_wait_for(lambda: set(ids) <= set(seen), timeout=10, what="drain through Sentinel")
            ins = fastq.Inspector(as_object)
            assert len(ins.servers()) == 1
            ins.close()
    asyncio.run(drain())
    ins = fastq.Inspector(url)
    assert ins.get_queue_info("s").processed_total == 3
    ins.close()
    master.close()


def test_asynq_spelling_gives_the_password_to_the_sentinels(group):
    # Asynq v0.26 ParseRedisURI: redis-sentinel://:PASSWORD@... sets SentinelPassword only, so a
    # password-protected master then refuses us: clearly, and without printing either password.
    asynq_form = group.url(scheme="redis-sentinel", auth=f":{SENT_PW}@")
    opt = parse_url(asynq_form)
    assert opt.sentinel_password == SENT_PW and opt.password is None
    with fastq.Client(asynq_form) as client, pytest.raises(redis.AuthenticationError) as err:
        client.enqueue(fastq.Task("t"))
    assert SENT_PW not in str(err.value) and DATA_PW not in str(err.value)


@pytest.mark.parametrize("change, error, fragment", [
    (lambda u: u.replace(f"sentinel_password={SENT_PW}", "sentinel_password=wrong"), redis.ConnectionError,
     "No master found for 'mymaster'"),
    (lambda u: u.replace(f":{DATA_PW}@", ":wrong@"), redis.AuthenticationError, "invalid"),
    (lambda u: u.replace("master=mymaster", "master=nope"), redis.ConnectionError, "No master found for 'nope'"),
])
def test_wrong_credentials_or_master_name_fail_clearly(url, change, error, fragment):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    bad = change(url)
    started = time.monotonic()
    # no retries here: the message is under test (the default retries a lost master ~10 times)
    with fastq.Client(fastq.connection.sync_client(bad, retry=Retry(NoBackoff(), 0))) as client, \
            pytest.raises(error) as err:
        client.enqueue(fastq.Task("t"))
    assert fragment in str(err.value), str(err.value)
    assert SENT_PW not in str(err.value) and DATA_PW not in str(err.value) and "wrong" not in str(err.value)
    assert time.monotonic() - started < 15


def test_replicated_durability_waits_for_the_replica_and_names_what_was_not_replicated(group, url):
    plain, durable = url, url + "&durability=replicated&replica_timeout=0.3"
    replica = next(n for n in group.data_nodes if n is not group.current_master())

    def timings(target, n=100):
        with fastq.Client(target) as client:
            client.enqueue(fastq.Task("warm"), queue="d")
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                client.enqueue(fastq.Task("t"), queue="d")
                out.append(time.perf_counter() - t0)
            return statistics.median(out) * 1000, sorted(out)[int(0.99 * n) - 1] * 1000

    p50_plain, p99_plain = timings(plain)
    p50_wait, p99_wait = timings(durable)
    print(f"enqueue latency: without WAIT p50 {p50_plain:.2f} ms p99 {p99_plain:.2f} ms; "
          f"with WAIT 1 p50 {p50_wait:.2f} ms p99 {p99_wait:.2f} ms")
    with fastq.Client(durable) as client:
        replica.pause()  # the replica stops acknowledging
        try:
            started = time.monotonic()
            with pytest.raises(NotReplicatedError) as err:
                client.enqueue(fastq.Task("t"), queue="d", task_id="unsafe")
            took = time.monotonic() - started
        finally:
            replica.resume()
        assert 0.25 < took < 3, took
        assert err.value.task_ids == ["unsafe"] and err.value.acked == 0
        group.wait_synced()
        with pytest.raises(fastq.errors.TaskIDConflictError):  # the write itself was kept on the master
            client.enqueue(fastq.Task("t"), queue="d", task_id="unsafe")
        client.enqueue(fastq.Task("t"), queue="d", task_id="safe")
        assert replica.client().exists(keys.task_key("d", "safe"))


def test_a_demoted_master_answers_readonly_and_clients_and_workers_follow_the_new_one(group, url):
    """SENTINEL FAILOVER keeps the old master alive and demotes it: connections still open to it
    get READONLY, which must make them reconnect to the new master, not fail forever."""
    old = group.current_master()
    client = fastq.Client(url)
    client.enqueue(fastq.Task("t", b"before"), queue="f")  # holds a pooled connection to the old master
    seen = []

    async def run():
        async with RunningWorker(lambda t: seen.append(t.payload), url, queues={"f": 1}, poll_interval=0.05):
            await async_wait_for(lambda: b"before" in seen, timeout=5, what="before the failover")
            sentinel = group.sentinels[0].client()
            sentinel.execute_command("SENTINEL", "FAILOVER", group.name)
            sentinel.close()
            await asyncio.to_thread(wait_until, lambda: group.current_master() is not old, 15, "switch-master")
            new = group.current_master()
            admin = old.client()
            admin.replicaof("127.0.0.1", new.port)  # what Sentinel does to a returning old master
            admin.close()
            started = time.monotonic()
            info = await asyncio.to_thread(client.enqueue, fastq.Task("t", b"after"), queue="f")
            took = time.monotonic() - started
            await async_wait_for(lambda: b"after" in seen, timeout=10, what="worker on the new master")
            landed = new.client()
            assert landed.sismember(keys.ALL_QUEUES, "f")
            assert not landed.exists(keys.task_key("f", info.id))  # processed and deleted there
            landed.close()
            return took, time.monotonic() - started
    enqueue_s, processed_s = asyncio.run(run())
    client.close()
    assert old.client().info("replication")["role"] == "slave"
    print(f"after the demotion: enqueue succeeded in {enqueue_s:.2f}s, processed {processed_s:.2f}s later")
