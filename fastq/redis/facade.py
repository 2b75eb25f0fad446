"""Where fastq's Redis clients come from: a URL, an option object, ``None`` or a client you built.

``sync_client`` / ``async_client`` take a URL (any form ``fastq.redis`` reads: single Redis, TLS,
unix socket, Sentinel, Cluster), an option object (``RedisClientOpt``, ``RedisFailoverClientOpt``,
``RedisClusterClientOpt``), ``None`` (``$FASTQ_REDIS_URL`` or ``redis://127.0.0.1:6379/0``) or a
client you built (used as is, after a check).
"""
from __future__ import annotations

import os
from typing import Any

from fastq.redis._compat import connection_kwargs
from fastq.redis.clients import async_client as build_async_client
from fastq.redis.clients import sync_client as build_sync_client
from fastq.redis.cluster import AsyncRedisCluster, SyncRedisCluster
from fastq.redis.connections import _connection_class
from fastq.redis.errors import ConnectionConfigError
from fastq.redis.options import OPTION_TYPES

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def default_url() -> str:
    """``$FASTQ_REDIS_URL``, or ``redis://127.0.0.1:6379/0`` when it is unset, empty or blank."""
    return os.environ.get("FASTQ_REDIS_URL", "").strip() or DEFAULT_URL


def check_bytes_client(client: Any) -> Any:
    """fastq stores protobuf bytes; a client that decodes replies to str would corrupt them.

    A ``RedisCluster`` built by hand is refused: redis-py's cluster pipelines reject script calls,
    which fastq batches; give the cluster as a URL or ``RedisClusterClientOpt`` instead.
    """
    import redis.asyncio.cluster
    import redis.cluster

    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)):
        if not isinstance(client, (SyncRedisCluster, AsyncRedisCluster)):
            raise ConnectionConfigError(
                "give fastq a Redis Cluster as a URL (redis+cluster://host:port,...) or a "
                "fastq.redis.RedisClusterClientOpt, not a redis-py RedisCluster: its pipelines refuse the "
                "script calls fastq batches")
        pending = client.__dict__.get("_fastq_init")  # a lazy SyncRedisCluster: look without connecting
        kwargs = pending[1] if pending is not None else connection_kwargs(client)
    else:
        kwargs = connection_kwargs(client)
    if kwargs.get("decode_responses"):
        raise ValueError("fastq needs a Redis client with decode_responses=False")
    return client


def _is_target(value: Any) -> bool:
    return value is None or isinstance(value, str) or isinstance(value, OPTION_TYPES)


def sync_client(url_or_client: Any = None, **kwargs: Any) -> Any:
    """A synchronous client for a URL, an option object, ``None`` (``$FASTQ_REDIS_URL`` or the
    default) or a client you built (checked, then used as is). ``kwargs`` override options."""
    if _is_target(url_or_client):
        return build_sync_client(url_or_client or default_url(), **kwargs)
    return check_bytes_client(url_or_client)


def async_client(url_or_client: Any = None, **kwargs: Any) -> Any:
    """The asyncio twin of ``sync_client``."""
    if _is_target(url_or_client):
        return build_async_client(url_or_client or default_url(), **kwargs)
    return check_bytes_client(url_or_client)


def fast_connection_class() -> Any:
    """The asyncio Connection class that packs commands with hiredis (kept for callers of the old name)."""
    import redis.asyncio.connection

    cls = _connection_class(redis.asyncio.connection.Connection, None, asyncio=True)
    return cls if cls is not redis.asyncio.connection.Connection else None
