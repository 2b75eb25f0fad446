"""redis-py's internals that fastq relies on (``fastq/redis/_compat.py``), checked by name and run for real.

When a redis-py release renames, removes or re-signs one of them, a test here fails saying which
attribute of which redis-py version, before a worker meets it. The signature checks bind the call
fastq makes (or the one redis-py makes into fastq's override) to the signature redis-py has now; the
other tests run each override against the session's real Redis (and one Redis Cluster for the
cluster plumbing).
"""
from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.client
import redis.cluster
import redis.connection
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from fastq import keys
from fastq.redis import NotReplicatedError, sync_client
from fastq.redis import _compat as compat

VERSION = redis.__version__


def _where(owner: Any, name: str) -> str:
    return f"{owner.__module__}.{owner.__qualname__}.{name}"


def _missing(owner: Any, name: str, why: str) -> str:
    return (f"redis-py {VERSION}: {_where(owner, name)} {why}; fastq.redis._compat relies on it "
            f"(see its docstring), so this redis-py is not supported until _compat is adapted")


# (owner, method, coroutine?, the call made: positional args after self, keyword args)
METHODS = [
    # SyncConnectHooks / TLS
    (redis.connection.Connection, "_connect", False, (), {}),
    (redis.connection.Connection, "on_connect_check_health", False, (), {"check_health": True}),
    (redis.connection.Connection, "connect_check_health", False, (), {"check_health": False}),
    (redis.connection.Connection, "connect", False, (), {}),
    # AsyncConnectHooks / TLS
    (redis.asyncio.connection.Connection, "_connection_arguments", False, (), {}),
    (redis.asyncio.connection.Connection, "_connect", True, (), {}),
    (redis.asyncio.connection.Connection, "connect_check_health", True, (), {"check_health": True}),
    (redis.asyncio.connection.Connection, "on_connect_check_health", True, (), {"check_health": True}),
    (redis.asyncio.connection.Connection, "connect", True, (), {}),
    # AsyncHiredisPack
    (redis.asyncio.connection.Connection, "pack_command", False, ("SET", "k", b"v"), {}),
    # Sentinel reconnect
    (redis.sentinel.SentinelManagedConnection, "connect_to", False, (("127.0.0.1", 6379),), {}),
    (redis.sentinel.SentinelManagedConnection, "connect", False, (), {}),
    (redis.asyncio.sentinel.SentinelManagedConnection, "connect_to", True, (("127.0.0.1", 6379),), {}),
    (redis.asyncio.sentinel.SentinelManagedConnection, "connect", True, (), {}),
    # fastq._rdb.window (enqueue_many's window) and fastq.redis.durability
    (redis.connection.ConnectionPool, "get_connection", False, (), {}),
    (redis.connection.ConnectionPool, "release", False, (object(),), {}),
    (redis.connection.Connection, "send_packed_command", False, ([b"PING"],), {"check_health": False}),
    (redis.connection.Connection, "read_response", False, (), {}),
    (redis.connection.Connection, "pack_command", False, ("EVALSHA", "sha", 1, "k"), {}),
    (redis.connection.Connection, "disconnect", False, (), {}),
    (redis.asyncio.connection.ConnectionPool, "get_connection", True, (), {}),
    (redis.asyncio.connection.ConnectionPool, "release", True, (object(),), {}),
    (redis.asyncio.connection.Connection, "send_packed_command", True, ([b"PING"],), {"check_health": False}),
    (redis.asyncio.connection.Connection, "read_response", True, (), {}),
    (redis.asyncio.connection.Connection, "disconnect", True, (), {}),
    # pipelines extended by fastq (durability, cluster)
    (redis.Redis, "pipeline", False, (False, None), {}),
    (redis.asyncio.Redis, "pipeline", False, (False, None), {}),
    (redis.client.Pipeline, "execute", False, (), {"raise_on_error": False}),
    (redis.asyncio.client.Pipeline, "execute", True, (), {"raise_on_error": False}),
    (redis.cluster.ClusterPipeline, "execute", False, (), {"raise_on_error": True}),
    (redis.asyncio.cluster.ClusterPipeline, "execute", True, (True, True), {}),
]


@pytest.mark.parametrize(("owner", "name", "is_async", "args", "kwargs"), METHODS,
                         ids=[f"{o.__module__}.{o.__qualname__}.{n}" for o, n, *_ in METHODS])
def test_the_redis_py_methods_fastq_relies_on_exist_with_a_compatible_signature(owner: Any, name: str,
                                                                                is_async: bool, args: tuple[Any, ...],
                                                                                kwargs: dict[str, Any]) -> None:
    method = getattr(owner, name, None)
    assert callable(method), _missing(owner, name, "is gone")
    assert inspect.iscoroutinefunction(inspect.unwrap(method)) == is_async, _missing(
        owner, name, f"is {'no longer' if is_async else 'now'} a coroutine function")
    signature = inspect.signature(method)
    try:
        signature.bind(object(), *args, **kwargs)
    except TypeError as exc:
        pytest.fail(_missing(owner, name, f"has the signature {signature}, which no longer takes "
                                          f"args={args!r} kwargs={kwargs!r} ({exc})"))


def test_the_redis_py_attributes_fastq_relies_on_exist() -> None:
    for cls in (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster):
        assert isinstance(getattr(cls, "RedisClusterRequestTTL", None), int), _missing(
            cls, "RedisClusterRequestTTL", "is gone (or no longer an int)")
        source = inspect.getsource(cls)
        assert "self.RedisClusterRequestTTL" in source, _missing(
            cls, "RedisClusterRequestTTL", "is no longer read by the client, so max_redirects would do nothing")
    for cls in (redis.sentinel.Sentinel, redis.asyncio.sentinel.Sentinel):
        sentinel = cls([])
        assert isinstance(getattr(sentinel, "sentinels", None), list), _missing(cls, "sentinels", "is gone")
    pool = redis.ConnectionPool(host="127.0.0.1", port=1, decode_responses=True)
    assert getattr(pool, "connection_kwargs", {}).get("decode_responses") is True, _missing(
        redis.ConnectionPool, "connection_kwargs", "no longer holds the connection options")
    conn = redis.connection.Connection(host="127.0.0.1", port=1, socket_timeout=3.0, socket_connect_timeout=2.0)
    for name in ("host", "port", "socket_timeout", "socket_connect_timeout"):
        assert hasattr(conn, name), _missing(redis.connection.Connection, name, "is no longer an attribute")


def test_the_pipelines_fastq_extends_take_a_class_of_the_same_layout() -> None:
    for cls in (redis.client.Pipeline, redis.asyncio.client.Pipeline, redis.cluster.ClusterPipeline,
                redis.asyncio.cluster.ClusterPipeline):
        assert cls.__dictoffset__ != 0, _missing(cls, "__dict__", "is gone (__slots__ all the way down): "
                                                                  "extend() cannot swap its class")
        assert "__len__" in dir(cls), _missing(cls, "__len__", "is gone")


# ---------------------------------------------------------------- the overrides, for real


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


class _Refused(redis.exceptions.ConnectionError):
    """What a hook raises instead of redis-py's error."""


def test_sync_connect_hooks_get_the_socket_and_the_setup_failure(redis_url: str) -> None:
    host, port = _address(redis_url)
    seen: list[socket.socket] = []
    failures: list[BaseException] = []

    class Probe(compat.SyncConnectHooks, redis.connection.Connection):
        def fastq_wrap_socket(self, sock: socket.socket) -> socket.socket:
            seen.append(sock)
            return sock

        def fastq_setup_failed(self, exc: redis.exceptions.ConnectionError) -> BaseException:
            failures.append(exc)
            return _Refused(f"refused: {exc}")

    client = redis.Redis.from_pool(redis.ConnectionPool(connection_class=Probe, host=host, port=port))
    try:
        assert client.ping() is True
        assert len(seen) == 1, "redis-py no longer opens its socket through Connection._connect()"
    finally:
        client.close()
    # no such ACL user: AUTH fails (WRONGPASS) in on_connect_check_health
    bad = redis.Redis.from_pool(redis.ConnectionPool(connection_class=Probe, host=host, port=port,
                                                           username="compat-nobody", password="wrong",
                                                           retry=Retry(NoBackoff(), 0)))
    try:
        with pytest.raises(_Refused, match="refused: "):
            bad.ping()
    finally:
        bad.close()
    assert failures and isinstance(failures[0], redis.exceptions.AuthenticationError)


def test_async_connect_hooks_get_the_arguments_the_connect_and_its_failures(redis_url: str) -> None:
    host, port = _address(redis_url)
    arguments: list[dict[str, Any]] = []
    opened: list[int] = []

    class Probe(compat.AsyncConnectHooks, redis.asyncio.connection.Connection):
        def fastq_open_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
            arguments.append(dict(kwargs))
            return kwargs

        async def fastq_open(self, connect: Callable[[], Any]) -> None:
            opened.append(1)
            await connect()

        def fastq_setup_failed(self, exc: redis.exceptions.ConnectionError) -> BaseException:
            return _Refused(f"setup refused: {exc}")

    class Failing(compat.AsyncConnectHooks, redis.asyncio.connection.Connection):
        async def fastq_open(self, connect: Callable[[], Any]) -> None:
            raise _Refused("open refused")

        def fastq_connect_failed(self, exc: redis.exceptions.ConnectionError) -> BaseException | None:
            return exc.__cause__ if isinstance(exc.__cause__, _Refused) else None

    async def run() -> None:
        client = redis.asyncio.Redis.from_pool(redis.asyncio.ConnectionPool(
            connection_class=Probe, host=host, port=port))
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()
        assert opened == [1], "redis-py no longer connects through the asyncio Connection._connect()"
        assert arguments and arguments[0].get("host") == host and int(arguments[0].get("port", 0)) == port, (
            f"redis-py {VERSION}: asyncio Connection._connection_arguments() no longer gives host and port "
            f"({arguments})")
        for cls, user, expected in ((Probe, "compat-nobody", "setup refused: "), (Failing, None, "open refused")):
            bad = redis.asyncio.Redis.from_pool(redis.asyncio.ConnectionPool(
                connection_class=cls, host=host, port=port, username=user, password=user and "wrong",
                retry=redis.asyncio.retry.Retry(NoBackoff(), 0)))
            try:
                with pytest.raises(_Refused, match=expected):
                    await bad.ping()
            finally:
                await bad.aclose()

    asyncio.run(run())


def test_hiredis_packing_gives_what_redis_py_would_send(redis_url: str) -> None:
    host, port = _address(redis_url)
    cls = type("Packed", (compat.AsyncHiredisPack, redis.asyncio.connection.Connection), {})
    conn = cls(host=host, port=port)
    plain = redis.asyncio.connection.Connection(host=host, port=port)
    for args in (("SET", "k", b"v\x00", 1, 2.5), ("EVALSHA", "abc", 1, "asynq:{q}:t:1", b""),
                 ("CLIENT SETNAME", "x"), ("SET", "k", memoryview(b"mv"))):
        assert b"".join(conn.pack_command(*args)) == b"".join(plain.pack_command(*args)), args

    async def run() -> None:
        client = redis.asyncio.Redis.from_pool(redis.asyncio.ConnectionPool(
            connection_class=cls, host=host, port=port))
        try:
            assert await client.set("compat:packed", b"\xff\x00v") is True
            assert await client.get("compat:packed") == b"\xff\x00v"
        finally:
            await client.aclose()

    asyncio.run(run())


class _Discovery:
    """What a SentinelManagedConnection asks for its master: here, the session's Redis."""

    is_master = True
    check_connection = False
    service_name = "compat"

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.asked = 0

    def get_master_address(self) -> tuple[str, int]:
        self.asked += 1
        return self.address


class _AsyncDiscovery(_Discovery):
    async def get_master_address(self) -> tuple[str, int]:  # type: ignore[override]
        self.asked += 1
        return self.address


def test_a_dropped_sentinel_managed_connection_reconnects_through_discovery(redis_url: str) -> None:
    discovery = _Discovery(_address(redis_url))
    cls = type("Managed", (compat.SyncSentinelReconnect, redis.sentinel.SentinelManagedConnection), {})
    conn = cls(connection_pool=discovery)
    try:
        conn.connect()
        assert discovery.asked == 1
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", "PONG")
        conn.disconnect()
        conn.send_command("PING")  # redis-py reconnects here
        assert conn.read_response() in (b"PONG", "PONG")
        assert discovery.asked == 2, (f"redis-py {VERSION}: a dropped SentinelManagedConnection reconnected without "
                                      f"asking Sentinel (connect_check_health no longer routes through connect())")
    finally:
        conn.disconnect()


def test_a_dropped_async_sentinel_managed_connection_reconnects_through_discovery(redis_url: str) -> None:
    discovery = _AsyncDiscovery(_address(redis_url))
    cls = type("Managed", (compat.AsyncSentinelReconnect, redis.asyncio.sentinel.SentinelManagedConnection), {})

    async def run() -> None:
        conn = cls(connection_pool=discovery)
        try:
            await conn.connect()
            assert discovery.asked == 1
            await conn.send_command("PING")
            assert await conn.read_response() in (b"PONG", "PONG")
            await conn.disconnect()
            await conn.send_command("PING")
            assert await conn.read_response() in (b"PONG", "PONG")
            assert discovery.asked == 2, (f"redis-py {VERSION}: a dropped asyncio SentinelManagedConnection "
                                          f"reconnected without asking Sentinel")
        finally:
            await conn.disconnect()

    asyncio.run(run())


class _Counting:
    """A pipeline mixin: counts its executions."""

    runs = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        type(self).runs += 1
        return super().execute(*args, **kwargs)  # type: ignore[misc]


def test_extend_swaps_a_real_pipeline_class_once_and_keeps_it_working(r: redis.Redis) -> None:
    first = compat.extend(r.pipeline(transaction=False), _Counting, "Probe", _fastq_mark=7)
    first.set("compat:a", b"1").get("compat:a")
    assert len(first) == 2
    assert first.execute() == [True, b"1"]
    assert type(first).__name__ == "ProbePipeline" and type(first).runs == 1
    assert first.__dict__["_fastq_mark"] == 7
    second = compat.extend(r.pipeline(transaction=False), _Counting, "Probe")
    assert type(second) is type(first)


def test_durable_clients_wait_and_name_the_task_of_an_unreplicated_write(redis_url: str, r: redis.Redis) -> None:
    """``durability=replicated`` runs ``extend`` on real pipelines and counts queued calls with ``len``."""
    client = sync_client(f"{redis_url}?durability=replicated&replicas=1&replica_timeout=0.05")
    sha = r.script_load("return 1")
    try:
        with pytest.raises(NotReplicatedError) as info:
            client.evalsha(sha, 2, keys.pending_key("q"), keys.task_key("q", "id-1"))
        assert info.value.task_ids == ["id-1"] and info.value.acked == 0
        assert client.pipeline(transaction=False).execute() == []
    finally:
        client.close()


def test_cluster_plumbing_on_a_real_cluster(cluster: Any) -> None:
    host, port = "127.0.0.1", cluster.nodes[0].port
    marker = type("Marked", (redis.asyncio.connection.Connection,), {})

    async def run() -> None:
        client = redis.asyncio.cluster.RedisCluster(startup_nodes=[redis.asyncio.cluster.ClusterNode(host, port)])
        compat.set_node_connection_class(client, marker)
        compat.set_max_redirects(client, 3)
        try:
            assert client.RedisClusterRequestTTL == 3
            before = compat.cluster_nodes(client)
            assert [(n.host, n.port) for n in before] == [(host, port)]
            assert await client.set("compat:{a}", b"1") is True
            nodes = compat.cluster_nodes(client)
            assert len(nodes) == 3, f"redis-py {VERSION}: nodes_manager.nodes_cache no longer lists the nodes"
            assert all(type(c) is marker for n in nodes for c in n._connections) and any(
                n._connections for n in nodes), (f"redis-py {VERSION}: a discovered node does not use the "
                                                 f"connection class set on the startup nodes")
            primaries = compat.cluster_nodes(client, primaries=True)
            assert len(primaries) == 3 and all(n.server_type == "primary" for n in primaries)
            for node in primaries:
                plain = compat.node_client(node)
                try:
                    assert await plain.ping() is True
                finally:
                    await plain.aclose()
            assert compat.connection_kwargs(client)["connection_class"] is marker
            pipe = compat.extend(client.pipeline(), _AsyncCounting)
            pipe.get("compat:{a}")
            assert await pipe.execute() == [b"1"] and type(pipe).runs == 1
        finally:
            await client.aclose()

    asyncio.run(run())

    sync = redis.cluster.RedisCluster(host=host, port=port)
    try:
        compat.set_max_redirects(sync, 2)
        assert sync.RedisClusterRequestTTL == 2
        pipe = compat.extend(sync.pipeline(), _Counting, "Sync")
        pipe.get("compat:{a}")
        assert pipe.execute() == [b"1"] and type(pipe).__name__.startswith("Sync")
    finally:
        sync.close()


class _AsyncCounting:
    runs = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        type(self).runs += 1
        return await super().execute(*args, **kwargs)  # type: ignore[misc]


def test_sentinel_clients_are_the_ones_discovery_asks(redis_url: str) -> None:
    host, port = _address(redis_url)
    sentinel = redis.sentinel.Sentinel([])
    clients = [redis.Redis(host=host, port=port)]
    compat.set_sentinels(sentinel, clients)
    assert tuple(compat.sentinel_clients(sentinel)) == tuple(clients)
    assert compat.sentinel_clients(None) == ()
    # discovery asks them: the session's Redis is no Sentinel, so it refuses the question
    with pytest.raises(redis.exceptions.RedisError):
        sentinel.discover_master("compat")
    clients[0].close()
