"""Every use fastq makes of redis-py's internals, in one module ("overrides").

Everywhere else fastq uses redis-py's public API. What is here overrides, or reaches into,
something redis-py does not document; each entry says what it relies on, so that a redis-py
release that changes one breaks here, and in ``tests/test_redis_compat.py`` (which checks every
name and signature listed below and runs each override against a real Redis), not deep inside a
worker. Tested with redis-py 6.0 to 8.1 (``pyproject.toml`` pins ``redis>=6.0,<9``).

Connections (``redis.connection.Connection``, ``redis.asyncio.connection.Connection``):

* ``SyncConnectHooks`` overrides ``_connect()`` (private: opens the TCP socket and returns it;
  ``connect_check_health`` calls it) to pass the socket to ``fastq_wrap_socket`` (TLS), and
  ``on_connect_check_health(check_health)`` (6.0+: AUTH / HELLO / SELECT on a new connection) to
  pass a failure to ``fastq_setup_failed``.
* ``AsyncConnectHooks`` overrides ``_connection_arguments()`` (private: the keyword arguments of
  ``asyncio.open_connection``) for ``fastq_open_arguments``, ``_connect()`` (private coroutine
  that opens the stream) for ``fastq_open``, ``connect_check_health(check_health,
  retry_socket_connect)`` (6.0+; it wraps what ``_connect`` raises as ``ConnectionError(exc) from
  exc``) for ``fastq_connect_failed``, and ``on_connect_check_health`` as the sync one.
* ``AsyncHiredisPack`` overrides ``pack_command(*args)``: its result, a list of byte strings, is
  what ``send_packed_command`` writes.
* ``SyncSentinelReconnect`` / ``AsyncSentinelReconnect`` override
  ``SentinelManagedConnection.connect_to(address)`` (what discovery, ``_connect_retry``, calls)
  and ``connect_check_health`` (what ``send_packed_command`` calls to reconnect a dropped
  connection), so that a reconnect goes through ``connect()``, i.e. discovery.

Clients and pipelines:

* ``extend(obj, mixin)`` swaps ``obj.__class__`` for a cached subclass ``(mixin, type(obj))``:
  redis-py's ``Pipeline`` / ``ClusterPipeline`` instances are made by ``pipeline()`` with
  arguments fastq does not know, and take a class of the same layout (they have a ``__dict__``).
* ``set_node_connection_class(client, cls)``: asyncio ``RedisCluster`` takes no connection class;
  this sets it in ``client.connection_kwargs``, on ``client.startup_nodes`` (7.0+) and on
  ``client.nodes_manager.startup_nodes`` (a dict of ``ClusterNode``, attribute
  ``connection_class``), from which redis-py makes every node it discovers.
* ``cluster_nodes(client)``: ``client.nodes_manager.nodes_cache`` (the nodes known), else
  ``nodes_manager.startup_nodes`` (before the first command); a node's ``server_type``.
* ``node_client(node)``: a plain asyncio client to one asyncio ``ClusterNode`` from its ``host``,
  ``port``, ``connection_class`` and ``connection_kwargs``, minus the keys the cluster adds for
  its own plumbing (``NODE_PLUMBING``).
* ``set_max_redirects(client, n)``: the class attribute ``RedisClusterRequestTTL`` of both
  ``RedisCluster`` classes, read at each command (how many MOVED / ASK / TRYAGAIN it follows).
* ``set_sentinels(sentinel, clients)`` / ``sentinel_clients(sentinel)``: ``Sentinel.sentinels``,
  the clients discovery asks, which fastq builds itself (with its own connection class).
* ``connection_kwargs(client)``: ``ConnectionPool.connection_kwargs`` of a client, or the
  asyncio ``RedisCluster.connection_kwargs``.

Public names without documentation, used elsewhere and only checked here: ``fastq._rdb.window``
(``enqueue_many``'s window) calls ``ConnectionPool.get_connection()`` without a command name
(5.3+), ``Connection.send_packed_command(command, check_health=False)``,
``Connection.read_response()``, ``Connection.pack_command(*args)``, ``Connection.disconnect()``
and ``ConnectionPool.release(connection)``, sync and asyncio. The cluster pipelines of
``fastq.redis.cluster`` send ``EVALSHA`` through ``execute_command``, relying on redis-py to
route it by its keys like any keyed command.
"""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping, Optional, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

if TYPE_CHECKING:
    import redis.asyncio.connection
    import redis.asyncio.sentinel
    import redis.connection
    import redis.sentinel

    _SyncConnection = redis.connection.Connection
    _AsyncConnection = redis.asyncio.connection.Connection
    _SyncSentinelConnection = redis.sentinel.SentinelManagedConnection
    _AsyncSentinelConnection = redis.asyncio.sentinel.SentinelManagedConnection
else:
    _SyncConnection = _AsyncConnection = _SyncSentinelConnection = _AsyncSentinelConnection = object

try:
    import hiredis

    HAVE_HIREDIS = True
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    HAVE_HIREDIS = False

__all__ = ["SyncConnectHooks", "AsyncConnectHooks", "AsyncHiredisPack", "SyncSentinelReconnect",
           "AsyncSentinelReconnect", "extend", "set_node_connection_class", "cluster_nodes", "node_client",
           "set_max_redirects", "set_sentinels", "sentinel_clients", "connection_kwargs", "NODE_PLUMBING"]

T = TypeVar("T")

# ---------------------------------------------------------------- connections


class SyncConnectHooks(_SyncConnection):
    """Hooks into a sync connection's connect: ``fastq_wrap_socket`` gets the TCP socket,
    ``fastq_setup_failed`` a ``ConnectionError`` of the set-up after it (returns what to raise
    instead, or ``None`` to keep it)."""

    def fastq_wrap_socket(self, sock: socket.socket) -> socket.socket:
        return sock

    def fastq_setup_failed(self, exc: redis.exceptions.ConnectionError) -> Optional[BaseException]:
        return None

    def _connect(self) -> socket.socket:
        sock: socket.socket = super()._connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        return self.fastq_wrap_socket(sock)

    def on_connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().on_connect_check_health(*args, **kwargs)
        except redis.exceptions.ConnectionError as exc:
            better = self.fastq_setup_failed(exc)
            if better is None:
                raise
            raise better from None


class AsyncConnectHooks(_AsyncConnection):
    """Hooks into an asyncio connection's connect: ``fastq_open_arguments`` edits the keyword
    arguments of ``asyncio.open_connection``, ``fastq_open`` runs redis-py's connect (a
    coroutine function), ``fastq_connect_failed`` / ``fastq_setup_failed`` get the
    ``ConnectionError`` of the connect / of the set-up after it (they return what to raise
    instead, or ``None``)."""

    def fastq_open_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs

    async def fastq_open(self, connect: Callable[[], Awaitable[None]]) -> None:
        await connect()

    def fastq_connect_failed(self, exc: redis.exceptions.ConnectionError) -> Optional[BaseException]:
        return None

    def fastq_setup_failed(self, exc: redis.exceptions.ConnectionError) -> Optional[BaseException]:
        return None

    def _connection_arguments(self) -> Mapping[str, Any]:
        return self.fastq_open_arguments(dict(super()._connection_arguments()))

    async def _connect(self) -> None:
        await self.fastq_open(super()._connect)

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().connect_check_health(*args, **kwargs)
        except redis.exceptions.ConnectionError as exc:
            better = self.fastq_connect_failed(exc)
            if better is None:
                raise
            raise better from None

    async def on_connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().on_connect_check_health(*args, **kwargs)
        except redis.exceptions.ConnectionError as exc:
            better = self.fastq_setup_failed(exc)
            if better is None:
                raise
            raise better from None


class AsyncHiredisPack(_AsyncConnection):
    """Pack asyncio commands with hiredis (C) instead of redis-py's Python (~1.5 us/argument)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if HAVE_HIREDIS and isinstance(head, str) and " " not in head:  # multi-word names: the slow way
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # e.g. a memoryview argument
                pass
        return super().pack_command(*args)


class SyncSentinelReconnect(_SyncSentinelConnection):
    """Reconnect through Sentinel. redis-py 8.1 reconnects a dropped Sentinel-managed connection
    (``send_packed_command`` -> ``connect_check_health``) to the host it last used, bypassing
    discovery: after a failover that keeps the old master alive as a replica, every retry lands
    on it again (READONLY forever). Only ``connect_to`` (which discovery calls) connects directly."""

    _fastq_direct = False

    def connect_to(self, address: Any) -> None:
        self._fastq_direct = True
        try:
            super().connect_to(address)  # type: ignore[no-untyped-call]  # unannotated in redis-py
        finally:
            self._fastq_direct = False

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self._fastq_direct:
            super().connect_check_health(*args, **kwargs)
        else:
            self.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py


class AsyncSentinelReconnect(_AsyncSentinelConnection):
    """``SyncSentinelReconnect`` for asyncio."""

    _fastq_direct = False

    async def connect_to(self, address: Any) -> None:
        self._fastq_direct = True
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]  # unannotated in redis-py
        finally:
            self._fastq_direct = False

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self._fastq_direct:
            await super().connect_check_health(*args, **kwargs)
        else:
            await self.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py


# ---------------------------------------------------------------- clients and pipelines

_extended: dict[tuple[type, type], type] = {}


def extend(obj: T, mixin: type, prefix: str = "Fastq", **attrs: Any) -> T:
    """Give ``obj`` (a redis-py pipeline) the methods of ``mixin``, in place: its class becomes a
    cached subclass ``(mixin, type(obj))`` named ``<prefix><class name>``; ``attrs`` are set on it."""
    base = type(obj)
    key = (mixin, base)
    cls = _extended.get(key)
    if cls is None:
        cls = _extended[key] = type(f"{prefix}{base.__name__}", (mixin, base), {})
    obj.__class__ = cls
    obj.__dict__.update(attrs)
    return obj


def set_node_connection_class(client: redis.asyncio.cluster.RedisCluster, cls: type) -> None:
    """Make every node connection of an asyncio ``RedisCluster`` (known now or discovered later) a ``cls``."""
    client.connection_kwargs["connection_class"] = cls
    for node in (*getattr(client, "startup_nodes", ()), *client.nodes_manager.startup_nodes.values()):
        node.connection_class = cls  # (redis-py < 7 keeps them in nodes_manager only)


def cluster_nodes(client: redis.asyncio.cluster.RedisCluster,
                  primaries: bool = False) -> list[redis.asyncio.cluster.ClusterNode]:
    """The nodes an asyncio ``RedisCluster`` knows (its startup nodes before the first command);
    with ``primaries``, only the primaries if it knows which they are."""
    manager = client.nodes_manager
    nodes = list(manager.nodes_cache.values()) or list(manager.startup_nodes.values())
    if primaries:
        return [n for n in nodes if getattr(n, "server_type", None) == "primary"] or nodes
    return nodes


# What an asyncio cluster adds to a node's connection keywords for itself; a plain pool refuses them.
NODE_PLUMBING = frozenset({"connection_class", "host", "port", "response_callbacks", "himport_registry",
                           "max_connections"})


def node_client(node: redis.asyncio.cluster.ClusterNode) -> redis.asyncio.Redis:
    """A plain asyncio client to one cluster node, with the cluster's connection options."""
    kwargs = {k: v for k, v in node.connection_kwargs.items() if k not in NODE_PLUMBING}
    pool = redis.asyncio.ConnectionPool(connection_class=node.connection_class, host=node.host, port=node.port,
                                        **kwargs)
    return redis.asyncio.Redis.from_pool(pool)


def set_max_redirects(client: Any, count: int) -> None:
    """How many redirects (MOVED, ASK, TRYAGAIN...) one command of ``client`` (either
    ``RedisCluster``) follows before it fails."""
    client.__dict__["RedisClusterRequestTTL"] = count


def set_sentinels(sentinel: Any, clients: list[Any]) -> None:
    """Make ``sentinel`` (a sync or asyncio ``Sentinel``) ask these clients for the master."""
    sentinel.sentinels = clients


def sentinel_clients(sentinel: Any) -> Iterable[Any]:
    """The clients a ``Sentinel`` asks (none for ``None``)."""
    return tuple(getattr(sentinel, "sentinels", ()))


def connection_kwargs(client: Any) -> dict[str, Any]:
    """The connection options of a client (its pool's, or an asyncio cluster's); ``{}`` if unknown."""
    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)):
        kwargs = getattr(client, "connection_kwargs", None)
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    return dict(kwargs) if kwargs else {}
