"""Building sync and asyncio clients from a URL or an option object (single Redis, Sentinel, Cluster)."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Optional
from urllib.parse import parse_qsl, quote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.sentinel

from fastq.redis._compat import cluster_nodes, node_client, set_max_redirects, set_sentinels
from fastq.redis.cluster import AsyncRedisCluster, SyncRedisCluster
from fastq.redis.connections import _connection_class, _redis_class
from fastq.redis.errors import ConnectionConfigError
from fastq.redis.options import (
    DURABILITY,
    RedisClusterClientOpt,
    RedisFailoverClientOpt,
    _fmt_addr,
)
from fastq.redis.url import as_options, parse_url, redact

# ---------------------------------------------------------------- building clients

Options = dict[str, Any]  # redis-py keyword arguments

def _kwargs(opt: Any, overrides: Options) -> Options:
    """Caller defaults (e.g. the worker's fail-fast timeouts) overridden by what the option sets."""
    out = dict(overrides)
    for name in ("username", "password", "socket_timeout", "socket_connect_timeout", "max_connections"):
        value = getattr(opt, name, None)
        if value is not None:
            out[name] = value
    return out


def _durability_override(opt: Any, overrides: Options) -> Any:
    if "durability" in overrides:
        durability = overrides.pop("durability")
        if durability not in DURABILITY:
            raise ConnectionConfigError(f"durability must be None or 'replicated', got {durability!r}")
        if isinstance(opt, RedisClusterClientOpt):
            if durability:
                raise ConnectionConfigError("durability='replicated' is not supported on Redis Cluster")
            return opt
        if durability != opt.durability:
            opt = replace(opt, durability=durability)
    return opt


def sync_client(target: Any, **overrides: Any) -> Any:
    """A ``redis.Redis`` (or fastq's ``SyncRedisCluster``) for a URL or option object. Nothing
    connects until the first command. ``overrides`` are redis-py keyword arguments used as
    defaults, plus ``durability`` (``None`` ignores the option's durability)."""
    opt = _durability_override(as_options(target), overrides)
    if isinstance(opt, RedisClusterClientOpt):
        return _sync_cluster(opt, overrides)
    if isinstance(opt, RedisFailoverClientOpt):
        return _sync_sentinel(opt, overrides)
    kwargs = _kwargs(opt, overrides)
    cls: type
    if opt.network == "unix":
        cls = redis.connection.UnixDomainSocketConnection
        kwargs["path"] = opt.addr
    else:
        cls = _connection_class(redis.connection.Connection, opt.tls, asyncio=False)
        kwargs["host"], kwargs["port"] = opt.host_port
    pool = redis.ConnectionPool(connection_class=cls, db=opt.db, **kwargs)
    return _redis_class(redis.Redis, opt, asyncio=False).from_pool(pool)


def async_client(target: Any, **overrides: Any) -> Any:
    """``sync_client`` for asyncio: a ``redis.asyncio.Redis`` (or fastq's ``AsyncRedisCluster``)."""
    opt = _durability_override(as_options(target), overrides)
    if isinstance(opt, RedisClusterClientOpt):
        return _async_cluster(opt, overrides)
    if isinstance(opt, RedisFailoverClientOpt):
        return _async_sentinel(opt, overrides)
    kwargs = _kwargs(opt, overrides)
    if opt.network == "unix":
        cls = _connection_class(redis.asyncio.connection.UnixDomainSocketConnection, None, asyncio=True)
        kwargs["path"] = opt.addr
    else:
        cls = _connection_class(redis.asyncio.connection.Connection, opt.tls, asyncio=True)
        kwargs["host"], kwargs["port"] = opt.host_port
    pool = redis.asyncio.ConnectionPool(connection_class=cls, db=opt.db, **kwargs)
    return _redis_class(redis.asyncio.Redis, opt, asyncio=True).from_pool(pool)


def _sentinel_kwargs(opt: RedisFailoverClientOpt, overrides: Options) -> Options:
    out = {k: v for k, v in overrides.items() if k in ("socket_timeout", "socket_connect_timeout")}
    for name in ("socket_timeout", "socket_connect_timeout"):
        if getattr(opt, name) is not None:
            out[name] = getattr(opt, name)
    out.setdefault("socket_timeout", 2.0)
    out.setdefault("socket_connect_timeout", 2.0)
    if opt.sentinel_username is not None:
        out["username"] = opt.sentinel_username
    if opt.sentinel_password is not None:
        out["password"] = opt.sentinel_password
    return out


def _sync_sentinel(opt: RedisFailoverClientOpt, overrides: Options) -> Any:
    skw = _sentinel_kwargs(opt, overrides)
    sentinel = redis.sentinel.Sentinel([], sentinel_kwargs=skw)  # type: ignore[no-untyped-call]  # unannotated
    plain = _connection_class(redis.connection.Connection, opt.tls, asyncio=False)
    set_sentinels(sentinel, [redis.Redis.from_pool(redis.ConnectionPool(connection_class=plain, host=h, port=p,
                                                                         **skw))
                             for h, p in opt.sentinels()])
    managed = _connection_class(redis.sentinel.SentinelManagedConnection, opt.tls, asyncio=False)
    kwargs = _kwargs(opt, overrides)
    if "retry" not in kwargs:  # redis-py gives Sentinel clients no retry; a failover needs a few
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        kwargs["retry"] = Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), 10)
    client = sentinel.master_for(  # type: ignore[no-untyped-call]  # unannotated in redis-py
        opt.master_name, redis_class=_redis_class(redis.Redis, opt, asyncio=False), connection_class=managed,
        db=opt.db, **kwargs)
    client._fastq_sentinel = sentinel
    return client


def _async_sentinel(opt: RedisFailoverClientOpt, overrides: Options) -> Any:
    skw = _sentinel_kwargs(opt, overrides)
    sentinel = redis.asyncio.sentinel.Sentinel([], sentinel_kwargs=skw)  # type: ignore[no-untyped-call]  # unannotated
    plain = _connection_class(redis.asyncio.connection.Connection, opt.tls, asyncio=True)
    set_sentinels(sentinel, [
        redis.asyncio.Redis.from_pool(redis.asyncio.ConnectionPool(connection_class=plain, host=h, port=p, **skw))
        for h, p in opt.sentinels()])
    managed = _connection_class(redis.asyncio.sentinel.SentinelManagedConnection, opt.tls, asyncio=True)
    kwargs = _kwargs(opt, overrides)
    if "retry" not in kwargs:  # as for the sync client: READONLY or a lost master is retried, reconnecting
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff

        kwargs["retry"] = Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), 10)
    client = sentinel.master_for(opt.master_name, redis_class=_redis_class(redis.asyncio.Redis, opt, asyncio=True),
                                 connection_class=managed, db=opt.db, **kwargs)
    client._fastq_sentinel = sentinel
    return client


def _sync_cluster(opt: RedisClusterClientOpt, overrides: Options) -> Any:
    kwargs = _kwargs(opt, overrides)
    retry = kwargs.pop("retry", None)
    kwargs.pop("maint_notifications_config", None)
    nodes = opt.nodes()
    cls = _connection_class(redis.connection.Connection, opt.tls, asyncio=False)
    host, port = nodes[0]
    # redis-py builds each node's pool from our connection class only on its from-URL path
    client = SyncRedisCluster(url=f"redis://{_fmt_addr(host, port)}", connection_class=cls,
                              startup_nodes=[redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]  # unannotated
                                             for h, p in nodes[1:]],
                              **({"retry": retry} if retry is not None else {}), **kwargs)
    if opt.max_redirects is not None:
        set_max_redirects(client, opt.max_redirects)
    return client


def _async_cluster(opt: RedisClusterClientOpt, overrides: Options) -> Any:
    kwargs = _kwargs(opt, overrides)
    cls = _connection_class(redis.asyncio.connection.Connection, opt.tls, asyncio=True)
    client = AsyncRedisCluster(startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in opt.nodes()],
                               connection_class=cls, **kwargs)
    if opt.max_redirects is not None:
        set_max_redirects(client, opt.max_redirects)
    return client


def fail_fast_options(*, asyncio: bool, socket_timeout: float = 5.0) -> Options:
    """Client options for fastq's own loops, which retry with back-off themselves: short socket
    timeouts and a single quick retry (redis-py's defaults - 10 retries - can block one call for
    ~30 s against an unreachable server, longer than a lease), and no per-connection
    ``CLIENT MAINT_NOTIFICATIONS`` probe (redis-py 8), which costs a round trip."""
    from redis.backoff import ExponentialWithJitterBackoff

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1)
    else:
        from redis.retry import Retry

        retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1)
    options: Options = {"socket_timeout": socket_timeout, "socket_connect_timeout": 2.0, "retry": retry}
    try:
        from redis.maint_notifications import MaintNotificationsConfig

        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    except ImportError:  # pragma: no cover - older redis-py
        pass
    return options


def pubsub_client(client: Any, attempt: int = 0) -> tuple[Any, bool]:
    """The client to subscribe with, and whether the caller must close it: on a cluster a plain
    client to one node (a new one per ``attempt``), else ``client`` itself."""
    if isinstance(client, AsyncRedisCluster):
        return client.plain_node_client(attempt), True
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        nodes = cluster_nodes(client)
        return node_client(nodes[attempt % len(nodes)]), True
    return client, False


def with_tls(url: str, ca: Optional[str] = None, cert: Optional[str] = None, key: Optional[str] = None,
             server_name: Optional[str] = None) -> str:
    """``url`` with TLS options added as query options (what ``--tls-ca`` and friends do), checked.

    The URL must use a TLS scheme (``rediss://``, ``rediss+sentinel://``, ``rediss+cluster://``):
    adding a CA to a plain-text URL is refused rather than silently ignored.
    """
    given = [(k, v) for k, v in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key),
                                 ("tls_server_name", server_name)) if v]
    opt = parse_url(url)
    if not given:
        return url
    if opt.tls is None:
        raise ConnectionConfigError(f"TLS options ({', '.join(k for k, _ in given)}) need a TLS URL "
                                    f"(rediss://, rediss+sentinel://, rediss+cluster://), got {redact(url)!r}")
    present = {k for k, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True)}
    for k, _ in given:
        alias = {"tls_ca": "ssl_ca_certs", "tls_cert": "ssl_certfile", "tls_key": "ssl_keyfile"}.get(k)
        if k in present or alias in present:
            raise ConnectionConfigError(f"{k} is given both in the URL and as an option")
    merged = url + ("&" if "?" in url else "?") + "&".join(f"{k}={quote(os.fspath(v), safe='/:')}" for k, v in given)
    parse_url(merged)  # reads and checks the files
    return merged
