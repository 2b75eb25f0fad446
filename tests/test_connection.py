"""fastq.connection: URLs and option objects, bad input, secrets, unix sockets, WAIT durability, ACL roles.

Everything that connects runs against real redis-server processes (a replica where WAIT needs one,
ACL users created with ACL SETUSER). TLS is in test_tls.py, Sentinel in test_sentinel.py,
Cluster in test_cluster.py.
"""
from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis
from helpers import RedisServer, RunningWorker, async_wait_for, dump, wait_for

import fastq
from fastq import connection as conn
from fastq import doctor, keys
from fastq.connection import (
    ACL_PRODUCER,
    ACL_READONLY,
    ACL_WORKER,
    ConnectionConfigError,
    NotReplicatedError,
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisFailoverClientOpt,
    parse_url,
    redact,
)

SECRET = "S3CRET"


# ---------------------------------------------------------------- URL forms

@pytest.mark.parametrize("url, expected", [
    ("redis://127.0.0.1:6379/0", RedisClientOpt()),
    ("redis://h", RedisClientOpt(addr="h:6379")),
    ("redis://:p%40ss@h:1/2", RedisClientOpt(addr="h:1", password="p@ss", db=2)),
    ("redis://fq:pw@h:1/0", RedisClientOpt(addr="h:1", username="fq", password="pw")),
    ("redis://fq@h:1", RedisClientOpt(addr="h:1", username="fq")),
    ("redis://[::1]:7000/3", RedisClientOpt(addr="[::1]:7000", db=3)),
    ("redis://h?db=4&socket_timeout=2.5&socket_connect_timeout=1&max_connections=9",
     RedisClientOpt(addr="h:6379", db=4, socket_timeout=2.5, socket_connect_timeout=1.0, max_connections=9)),
    ("unix:///run/redis.sock?db=1", RedisClientOpt(addr="/run/redis.sock", network="unix", db=1)),
    ("redis-socket://:pw@/run/redis.sock?db=2",  # Asynq's spelling
     RedisClientOpt(addr="/run/redis.sock", network="unix", password="pw", db=2)),
    ("redis+sentinel://u:pw@h1:1,h2:2/3?master=m&sentinel_password=sp",
     RedisFailoverClientOpt(master_name="m", sentinel_addrs=("h1:1", "h2:2"), username="u", password="pw",
                            sentinel_password="sp", db=3)),
    ("redis+sentinel://h1,h2?master=m",
     RedisFailoverClientOpt(master_name="m", sentinel_addrs=("h1:26379", "h2:26379"))),
    ("redis-sentinel://:pw@h1:1,h2:2/1?master=m",  # Asynq v0.26: the password is the Sentinels'
     RedisFailoverClientOpt(master_name="m", sentinel_addrs=("h1:1", "h2:2"), sentinel_password="pw", db=1)),
    ("redis+cluster://u:pw@h1:1,[::1]:2?max_redirects=5",
     RedisClusterClientOpt(addrs=("h1:1", "[::1]:2"), username="u", password="pw", max_redirects=5)),
    ("redis://h:1/0?durability=replicated&replicas=2&replica_timeout=0.25",
     RedisClientOpt(addr="h:1", durability="replicated", replicas=2, replica_timeout=0.25)),
])
def test_url_forms_and_their_round_trip(url, expected):
    opt = parse_url(url)
    assert opt == expected
    assert parse_url(opt.to_url()) == opt  # what a supervisor hands its children
    assert conn.parse_redis_uri is parse_url  # Go's name


@pytest.mark.parametrize("url, fragment", [
    ("nope://h", "the scheme must be one of"),
    ("127.0.0.1:6379", "expected scheme://"),
    ("redis://", "no host"),
    ("redis://h:0", "port must be 1-65535"),
    ("redis://h:99999", "port must be 1-65535"),
    ("redis://h:x", "Port could not be cast"),
    ("redis://h:", "empty port"),
    ("redis://h/abc", "database must be a number"),
    ("redis://h/1?db=2", "both in the path and as ?db="),
    ("redis://h?db=1&db=2", "given twice"),
    ("redis://h1,h2", "several hosts are only allowed"),
    ("redis://::1:6379", "put an IPv6 address in brackets"),
    ("redis://[::1:6379", "unclosed '['"),
    ("redis://[nothex]:1", "not an IPv6 address"),
    ("redis://h?foo=1", "unknown query option 'foo'"),
    ("redis://h?tls_ca=/etc/hostname", "need a TLS scheme"),
    ("rediss://h?ssl_cert_reqs=none", "always verifies TLS certificates"),
    ("rediss://h?tls_insecure=1", "always verifies TLS certificates"),
    ("redis://h?socket_timeout=fast", "socket_timeout must be a number"),
    ("redis://h?socket_timeout=0", "positive number of seconds"),
    ("redis://h?max_connections=0", "max_connections must be at least 1"),
    ("redis://h?durability=always", "durability must be None or 'replicated'"),
    ("redis://h?replicas=2", "need durability=replicated"),
    ("redis://h#frag", "fragment is not allowed"),
    ("unix://h/run/x.sock", "takes a path, not a host"),
    ("unix://", "no socket path"),
    ("unix:///x.sock?db=x", "database must be a number"),
    ("unix:///x.sock?tls_ca=/etc/hostname", "does not apply to unix://"),
    ("redis+sentinel://h1,h2", "?master=NAME"),
    ("redis+sentinel://h1?master=%20", "?master=NAME"),
    ("redis-sentinel://h1?master=m&sentinel_password=x", "the password is the Sentinels'"),
    ("redis+cluster://h1,h2/3", "only database 0"),
    ("redis+cluster://h?durability=replicated", "does not apply to redis+cluster://"),
    ("redis+cluster://h?master=m", "unknown query option 'master'"),
])
def test_bad_urls_raise_a_typed_error_naming_the_problem_never_the_password(url, fragment):
    secret_url = url.replace("://", f"://fq:{SECRET}@", 1) if "://" in url and not url.startswith("unix") else url
    for candidate in {url, secret_url}:
        with pytest.raises(ConnectionConfigError) as err:
            parse_url(candidate)
        assert fragment in str(err.value), str(err.value)
        assert SECRET not in str(err.value)
        assert isinstance(err.value, ValueError) and isinstance(err.value, fastq.errors.FastqError)
        with pytest.raises(ConnectionConfigError):
            fastq.Client(candidate)  # nothing connects: the client refuses at construction


@pytest.mark.parametrize("make, fragment", [
    (lambda: RedisClientOpt(addr="h:70000"), "port must be 1-65535"),
    (lambda: RedisClientOpt(addr=""), "empty address"),
    (lambda: RedisClientOpt(addr=("h", "1")), "must be an integer"),
    (lambda: RedisClientOpt(network="udp"), "network must be 'tcp' or 'unix'"),
    (lambda: RedisClientOpt(network="unix", addr="relative.sock"), "must be absolute"),
    (lambda: RedisClientOpt(db=-1), "db must be at least 0"),
    (lambda: RedisClientOpt(db="1"), "db must be an integer"),
    (lambda: RedisClientOpt(password=123), "password must be a str"),
    (lambda: RedisClientOpt(socket_timeout=float("nan")), "positive number"),
    (lambda: RedisClientOpt(tls="yes"), "tls must be a fastq.connection.TLSConfig"),
    (lambda: RedisClientOpt(durability="replicated", replicas=0), "replicas must be at least 1"),
    (lambda: RedisClientOpt(durability="replicated", replica_timeout=-1), "positive number"),
    (lambda: RedisFailoverClientOpt(sentinel_addrs=("h:1",)), "master_name is required"),
    (lambda: RedisFailoverClientOpt(master_name="m"), "needs at least one"),
    (lambda: RedisFailoverClientOpt(master_name="m", sentinel_addrs=("h:1", "h:x")), "Port could not be cast"),
    (lambda: RedisClusterClientOpt(), "needs at least one cluster node"),
    (lambda: RedisClusterClientOpt(addrs=("h:1",), max_redirects=0), "max_redirects must be at least 1"),
    (lambda: conn.TLSConfig(key_file="/etc/hostname"), "key_file given without cert_file"),
    (lambda: conn.TLSConfig(ca_file="/nonexistent/ca.pem"), "no such file"),
    (lambda: conn.TLSConfig(ca_file="/etc/hostname"), "not a PEM CA certificate"),
    (lambda: conn.TLSConfig(server_name=" "), "is not a host name"),
])
def test_bad_option_objects_raise_a_typed_error(make, fragment):
    with pytest.raises(ConnectionConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_durability_is_refused_on_a_cluster_and_checked_as_an_override():
    with pytest.raises(ConnectionConfigError, match="not supported on Redis Cluster"):
        conn.sync_client("redis+cluster://127.0.0.1:7000", durability="replicated")
    with pytest.raises(ConnectionConfigError, match="durability must be None or 'replicated'"):
        conn.sync_client("redis://127.0.0.1:7000", durability="yes")


# ---------------------------------------------------------------- secrets

def test_passwords_never_appear_in_reprs_redactions_or_urls_for_logs():
    urls = [f"redis://fq:{SECRET}@h:1/0", f"rediss://:{SECRET}@h:1/0", f"redis-socket://:{SECRET}@/x.sock",
            f"redis+sentinel://fq:{SECRET}@h1:1,h2:2/0?master=m&sentinel_password={SECRET}",
            f"redis-sentinel://:{SECRET}@h1,h2?master=m", f"redis+cluster://fq:{SECRET}@h1:1,h2:2",
            f"redis://fq:{SECRET}/with/slash@h:1/0", f"redis://fq:{SECRET}@weird@h:1/0",
            f"redis://:{SECRET}?x@h:1/0"]
    for url in urls:
        assert SECRET not in redact(url), url
        try:
            opt = parse_url(url)
        except ConnectionConfigError as exc:
            assert SECRET not in str(exc)
            continue
        for text in (repr(opt), str(opt), opt.redacted_url(), redact(opt)):
            assert SECRET not in text, text
        assert SECRET in opt.to_url()  # the one place it must be: for child processes, never printed
    assert redact(f"redis://fq:{SECRET}@h:1/0") == "redis://fq:***@h:1/0"
    assert redact("redis://h:1/0") == "redis://h:1/0" and redact("redis://fq@h:1") == "redis://fq@h:1"
    cfg = fastq.WorkerConfig(redis_url=f"redis+sentinel://fq:{SECRET}@h1:1/0?master=m&sentinel_password={SECRET}")
    assert SECRET not in repr(cfg)
    opt_cfg = fastq.WorkerConfig(redis_url=RedisFailoverClientOpt(master_name="m", sentinel_addrs=("h:1",),
                                                                  password=SECRET))
    assert SECRET not in repr(opt_cfg) and "password='***'" in repr(opt_cfg)


def test_worker_logs_and_auth_errors_do_not_show_the_password(tmp_path, caplog):
    server = RedisServer(tmp_path)
    server.start()
    redis.Redis(port=server.port).config_set("requirepass", SECRET)
    try:
        url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
        caplog.set_level(logging.INFO)

        async def run():
            async with RunningWorker(lambda t: None, url):
                pass
        asyncio.run(run())
        assert f"redis redis://:***@127.0.0.1:{server.port}/0" in caplog.text
        bad = f"redis://:wrong{SECRET}@127.0.0.1:{server.port}/0"
        with pytest.raises(redis.AuthenticationError) as err:
            fastq.Client(bad).enqueue(fastq.Task("t"))
        assert SECRET not in str(err.value) and SECRET not in repr(err.value)
        assert SECRET not in caplog.text
    finally:
        server.stop()


# ---------------------------------------------------------------- unix sockets

def test_unix_socket_urls_work_for_client_worker_and_inspector(tmp_path):
    sock = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, extra=["--unixsocket", str(sock), "--unixsocketperm", "700"])
    server.start()
    try:
        for url in (f"unix://{sock}?db=2", f"redis-socket://{sock}?db=2"):
            client = fastq.Client(url)
            info = client.enqueue(fastq.Task("t", url.encode()), queue="sock")
            client.close()
            seen = []

            async def drain():
                async with RunningWorker(lambda t: seen.append(t.payload), url, queues={"sock": 1}):
                    await async_wait_for(lambda: seen, timeout=5, what="task over the unix socket")
            asyncio.run(drain())
            assert seen == [url.encode()]
            assert fastq.Inspector(url).queues() == ["sock"]
            direct = redis.Redis(port=server.port, db=2)
            assert direct.sismember(keys.ALL_QUEUES, "sock") and not direct.exists(keys.task_key("sock", info.id))
            direct.flushall()
            direct.close()
    finally:
        server.stop()


# ---------------------------------------------------------------- durability="replicated" (WAIT)

@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    primary = RedisServer(tmp_path_factory.mktemp("primary"))
    primary.start()
    replica = RedisServer(tmp_path_factory.mktemp("replica"),
                          extra=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    r = redis.Redis(port=replica.port)
    wait_for(lambda: r.info("replication").get("master_link_status") == "up", timeout=10, what="replica synced")
    r.close()
    yield primary, replica
    replica.stop()
    primary.stop()


def test_replicated_durability_waits_for_the_replica(replicated):
    primary, replica = replicated
    url = f"redis://127.0.0.1:{primary.port}/0?durability=replicated&replica_timeout=2"
    on_replica = redis.Redis(port=replica.port)
    with fastq.Client(url) as client:
        one = client.enqueue(fastq.Task("t", b"one"), queue="dur")
        # WAIT returned after the replica acknowledged: the task is there already, no polling
        assert on_replica.hget(keys.task_key("dur", one.id), "state") == b"pending"
        many = client.enqueue_many([fastq.Task("t")] * 1500, queue="dur")  # two chunks, two WAITs
        assert on_replica.llen(keys.pending_key("dur")) == 1501
        later = client.enqueue(fastq.Task("t"), queue="dur", process_in=60, unique=60)
        assert on_replica.zscore(keys.scheduled_key("dur"), later.id) is not None
        assert len(many) == 1500

    async def async_enqueue():
        async with fastq.AsyncClient(fastq.connection.parse_url(url)) as ac:
            info = await ac.enqueue(fastq.Task("t", b"async"), queue="dur")
            assert on_replica.exists(keys.task_key("dur", info.id))
    asyncio.run(async_enqueue())
    on_replica.close()


def test_replicated_durability_raises_when_no_replica_acknowledges_in_time(replicated, tmp_path):
    primary, replica = replicated
    lonely = RedisServer(tmp_path)  # a primary without replicas
    lonely.start()
    try:
        url = f"redis://127.0.0.1:{lonely.port}/0?durability=replicated&replica_timeout=0.05"
        with fastq.Client(url) as client:
            started = time.monotonic()
            with pytest.raises(NotReplicatedError) as err:
                client.enqueue(fastq.Task("t"), queue="dur", task_id="not-safe-yet")
            assert time.monotonic() - started < 2
            assert err.value.task_ids == ["not-safe-yet"] and (err.value.acked, err.value.wanted) == (0, 1)
            assert "reached 0 of 1 replica(s) within 0.05s" in str(err.value) and "not-safe-yet" in str(err.value)
            assert isinstance(err.value, redis.RedisError) and isinstance(err.value, fastq.errors.FastqError)
            # the write is on the primary: enqueueing again with the same ID says it was kept
            with pytest.raises((fastq.errors.TaskIDConflictError, NotReplicatedError)):
                client.enqueue(fastq.Task("t"), queue="dur", task_id="not-safe-yet")
            with pytest.raises(NotReplicatedError) as err:
                client.enqueue_many([fastq.Task("t")] * 3, queue="dur")
            assert len(err.value.task_ids) == 3
        # a worker on the same URL ignores durability (a lost ack re-runs a task, it never loses one)
        seen = []

        async def drain():
            async with RunningWorker(lambda t: seen.append(fastq.get_task_id()), url, queues={"dur": 1}):
                await async_wait_for(lambda: len(seen) == 4, timeout=5, what="worker drains without WAIT")
        asyncio.run(drain())
        # with the replica of the module fixture, WAIT succeeds within the same timeout
        with fastq.Client(f"redis://127.0.0.1:{primary.port}/0?durability=replicated&replica_timeout=1") as ok:
            ok.enqueue(fastq.Task("t"), queue="dur")
    finally:
        lonely.stop()


# ---------------------------------------------------------------- ACL roles

@pytest.fixture
def acl_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    admin = redis.Redis(port=server.port)
    for name, rules in (("worker", ACL_WORKER), ("producer", ACL_PRODUCER), ("viewer", ACL_READONLY),
                        ("producer-no-notify", ACL_PRODUCER.replace("&asynq:{*}:fastq_notify", ""))):
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{name}-pw", *rules.split())
    yield server, admin
    admin.close()
    server.stop()


def _url(server, user: str) -> str:
    return f"redis://{user}:{user}-pw@127.0.0.1:{server.port}/0"


def _refused(exc: BaseException) -> bool:
    """An ACL refusal: NOPERM for a command, or (Redis 7.0) the ERR a script gets for a command inside it."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or "can't run this command" in str(exc) \
        or "can't publish to the channel" in str(exc)


def _denied(admin) -> list[str]:
    """ACL LOG entries: (user, what was denied)."""
    return [f"{e['username']}:{e['object']}" for e in admin.acl_log()]


def test_producer_enqueues_every_way_but_cannot_delete_or_flush(acl_server):
    server, admin = acl_server
    url = _url(server, "producer")
    with fastq.Client(url) as client:
        client.enqueue(fastq.Task("t", b"one"), queue="q", task_id="p1")
        client.enqueue_many([fastq.Task("t")] * 5, queue="q")
        client.enqueue_many([fastq.Task("t")] * 2, queue="q", process_in=60)
        client.enqueue(fastq.Task("t", b"u"), queue="q", unique=60)
        with pytest.raises(fastq.errors.DuplicateTaskError):
            client.enqueue(fastq.Task("t", b"u"), queue="q", unique=60)
        with pytest.raises(fastq.errors.TaskIDConflictError):  # releases its lock: DEL of a unique key
            client.enqueue(fastq.Task("t", b"v"), queue="q", unique=60, task_id="p1")
        client.enqueue(fastq.Task("t", b"g"), queue="q", group="g1")
        assert _denied(admin) == []
        before = dump(admin)
        r = client.redis
        attempts = [lambda: r.delete(keys.task_key("q", "p1")), lambda: r.unlink(keys.pending_key("q")),
                    lambda: r.flushall(), lambda: r.flushdb(), lambda: r.set(keys.pending_key("q"), "oops"),
                    lambda: r.zrem(keys.scheduled_key("q"), "x"), lambda: r.lrem(keys.pending_key("q"), 0, "p1"),
                    lambda: r.rpop(keys.pending_key("q")), lambda: r.hdel(keys.task_key("q", "p1"), "msg"),
                    lambda: r.expire(keys.pending_key("q"), 1), lambda: r.rename(keys.pending_key("q"), "asynq:x"),
                    lambda: r.eval("return redis.call('DEL', KEYS[1])", 1, keys.pending_key("q")),
                    lambda: r.script_flush(), lambda: r.publish(keys.CANCEL_CHANNEL, "p1"),
                    lambda: r.config_set("maxmemory", "1"), lambda: r.set("other:key", "1"),
                    lambda: r.delete(keys.unique_key("q", "t", b"u").replace("unique", "t"))]
        for attempt in attempts:
            with pytest.raises(redis.exceptions.ResponseError) as err:
                attempt()
            assert _refused(err.value), err.value
        assert dump(admin) == before
    assert {e.split(":", 1)[0] for e in _denied(admin)} == {"producer"}


def test_producer_without_the_notify_channel_rule_gets_errors_for_tasks_it_wrote(acl_server):
    """Why ACL_PRODUCER has &asynq:{*}:fastq_notify: enqueue scripts PUBLISH a wake-up when a queue's
    pending list stops being empty; without the channel that PUBLISH fails after the task is written."""
    server, admin = acl_server
    with fastq.Client(_url(server, "producer-no-notify")) as client:
        with pytest.raises(redis.exceptions.ResponseError, match="can't publish to the channel"):
            client.enqueue(fastq.Task("t"), queue="empty", task_id="written-anyway")
        assert admin.exists(keys.task_key("empty", "written-anyway"))  # ... yet the task is there
        client.enqueue(fastq.Task("t"), queue="empty")  # the list is not empty now: no PUBLISH, no error


def test_worker_role_runs_everything_a_worker_does_without_a_denied_command(acl_server):
    server, admin = acl_server
    with fastq.Client(_url(server, "producer")) as producer:
        ok = [i.id for i in producer.enqueue_many([fastq.Task("ok")] * 20, queue="q")]
        producer.enqueue(fastq.Task("fail"), queue="q", max_retry=1)
        kept = producer.enqueue(fastq.Task("ok"), queue="q", retention=1).id
        for p in (b"a", b"b"):
            producer.enqueue(fastq.Task("item", p), queue="q", group="g")
    seen, batches = [], []

    async def handler(task):
        if task.type == "fail":
            raise RuntimeError("planned")
        if task.type == "batch":
            batches.append(task.payload)
        if task.type == "slow":
            await asyncio.sleep(30)
        seen.append(fastq.get_task_id())
        if task.type == "ok" and len(seen) == 1:  # handlers enqueue follow-ups with the worker's client
            async with fastq.AsyncClient(_url(server, "worker")) as ac:
                await ac.enqueue(fastq.Task("ok", b"child"), queue="q")

    async def run():
        async with RunningWorker(handler, _url(server, "worker"), queues={"q": 1}, lease_duration=3,
                                 group_aggregator=lambda g, ts: fastq.Task("batch", b"".join(t.payload for t in ts)),
                                 group_grace_period=1, janitor_interval=0.2,
                                 retry_delay=lambda n, e=None, t=None: 0.2):
            await async_wait_for(lambda: set(ok) | {kept} <= set(seen) and batches
                                 and admin.zcard(keys.archived_key("q")) == 1, timeout=15, what="drain")
            slow = await asyncio.to_thread(
                lambda: fastq.Client(_url(server, "producer")).enqueue(fastq.Task("slow"), queue="q", max_retry=0))
            await asyncio.sleep(0.3)
            # cancel comes from an operator, not the viewer: the admin publishes as Go's Inspector would
            await async_wait_for(lambda: admin.publish(keys.CANCEL_CHANNEL, slow.id) and
                                 admin.zcard(keys.archived_key("q")) == 2, timeout=5, what="cancel reached")
            await async_wait_for(lambda: admin.zcard(keys.completed_key("q")) == 0, timeout=5, what="janitor")
            assert fastq.Inspector(_url(server, "viewer")).servers()  # the heartbeat's writes went through
    asyncio.run(run())
    assert len(batches) == 1 and sorted(batches[0]) == sorted(b"ab")
    # the worker's only denied command: the maxmemory-policy check, skipped (see docs/ops/redis.md); the viewer's
    # servers() listing above tried to prune stale entries first (denied), then read without pruning
    assert [e for e in _denied(admin) if e.startswith("worker:")] == ["worker:config|get"]
    assert doctor.check(admin, "q") == []


def test_read_only_user_can_look_at_everything_and_change_nothing(acl_server):
    from click.testing import CliRunner

    from fastq.cli import main as cli_main

    server, admin = acl_server
    with fastq.Client(_url(server, "producer")) as producer:
        ids = [i.id for i in producer.enqueue_many([fastq.Task("t")] * 3, queue="q")]
        later = producer.enqueue(fastq.Task("t"), queue="q", process_in=600).id
        producer.enqueue(fastq.Task("t", b"g"), queue="q", group="g")
    # a live server entry and a stale one (the viewer's listing must not prune it: no writes)
    admin.zadd(keys.ALL_SERVERS, {"asynq:servers:{stale}": 1})
    url = _url(server, "viewer")
    ins = fastq.Inspector(url)
    assert ins.queues() == ["q"]
    info = ins.get_queue_info("q")
    assert (info.pending, info.scheduled, info.aggregating) == (3, 1, 1)
    assert [t.id for t in ins.list_pending_tasks("q")] == ids
    assert ins.get_task_info("q", later).state.value == "scheduled"
    assert ins.history("q", 2)[0].processed == 0
    assert ins.groups("q")[0].group == "g"
    assert ins.servers() == [] and ins.scheduler_entries() == []
    assert ins.check("q") > 0 and ins.redis_info()["redis_version"]
    before = dump(admin)
    writes = [lambda: ins.delete_task("q", ids[0]), lambda: ins.archive_task("q", ids[0]),
              lambda: ins.run_task("q", later), lambda: ins.update_task_payload("q", later, b"x"),
              lambda: ins.pause_queue("q"), lambda: ins.delete_all_pending_tasks("q"),
              lambda: ins.archive_all_pending_tasks("q"), lambda: ins.run_all_scheduled_tasks("q"),
              lambda: ins.cancel_processing(ids[0]), lambda: ins.delete_queue("q", force=True),
              lambda: fastq.Client(url).enqueue(fastq.Task("t"), queue="q")]
    for write in writes:
        with pytest.raises(redis.exceptions.ResponseError) as err:
            write()
        assert _refused(err.value), err.value
    assert dump(admin) == before  # not even the stale servers entry was pruned

    def fq(*args):
        with CliRunner().isolation() as streams:
            try:
                cli_main(["--redis-url", url, *args])
                code = 0
            except SystemExit as exc:
                code = exc.code
            return code, streams[0].getvalue().decode() + streams[1].getvalue().decode()
    for args in (["stats"], ["queue", "ls"], ["task", "ls", "-q", "q", "-s", "pending"], ["server", "ls"],
                 ["queue", "inspect", "q"]):
        code, out = fq(*args)
        assert code == 0, (args, out)
    for args in (["task", "delete", "-q", "q", "-i", ids[0]], ["queue", "pause", "q"], ["enqueue", "t", "x"]):
        code, out = fq(*args)
        assert code == 1 and "no permission for this (ACL)" in out and "viewer-pw" not in out, (args, out)
    assert dump(admin) == before
    ins.close()


def test_the_docs_document_exactly_the_tested_acl_rules():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "ops" / "redis.md").read_text().replace("\\|", "|")
    for rules in (ACL_WORKER, ACL_PRODUCER, ACL_READONLY):
        assert f"`{rules}`" in page, rules


def test_a_worker_user_with_the_older_rules_still_preloads_every_script(acl_server):
    """Worker rules written before +script|exists was added: SCRIPT EXISTS is refused, and the
    worker loads every script as it did before asking which ones Redis has."""
    import redis.asyncio

    from fastq._rdb.scripts import SCRIPTS
    from fastq._rdb.worker import Broker

    server, admin = acl_server
    admin.execute_command("ACL", "SETUSER", "old-worker", "reset", "on", ">old-worker-pw",
                          *ACL_WORKER.replace(" +script|exists", "").split())
    admin.script_flush()

    async def main() -> int:
        client = redis.asyncio.Redis.from_url(_url(server, "old-worker"))
        try:
            return await Broker(client).load_scripts()
        finally:
            await client.aclose()

    assert asyncio.run(main()) == len(SCRIPTS)
    assert all(admin.script_exists(*[s.sha for s in SCRIPTS.values()]))
    assert "old-worker:script|exists" in _denied(admin)
