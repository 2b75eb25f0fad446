"""The old name of ``fastq.redis`` (how fastq connects to Redis), kept so that existing imports work.

``from fastq.connection import RedisClientOpt, parse_url, ...`` gives the same objects as
``fastq.redis``. ``sync_client`` / ``async_client`` here are the builders that take a URL or an
option object (``fastq.redis.sync_client`` also takes ``None`` or a client you built).
"""
from __future__ import annotations

from fastq.errors import RedisConfigurationError
from fastq.redis.acl import ACL_PRODUCER, ACL_READONLY, ACL_WORKER
from fastq.redis.clients import async_client, pubsub_client, sync_client, with_tls
from fastq.redis.cluster import AsyncRedisCluster, SyncRedisCluster, is_cluster
from fastq.redis.errors import ClusterUnavailableError, ConnectionConfigError, NotReplicatedError, TLSHandshakeError
from fastq.redis.options import (
    DEFAULT_PORT,
    DEFAULT_SENTINEL_PORT,
    OPTION_TYPES,
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisConnOpt,
    RedisFailoverClientOpt,
    TLSConfig,
)
from fastq.redis.startup import fatal_reason, preflight
from fastq.redis.url import as_options, parse_redis_uri, parse_url, redact

__all__ = [
    "TLSConfig", "RedisClientOpt", "RedisFailoverClientOpt", "RedisClusterClientOpt", "RedisConnOpt",
    "parse_url", "parse_redis_uri", "redact", "sync_client", "async_client", "is_cluster",
    "ConnectionConfigError", "TLSHandshakeError", "NotReplicatedError", "ClusterUnavailableError",
    "RedisConfigurationError", "fatal_reason", "preflight", "as_options", "with_tls", "pubsub_client",
    "OPTION_TYPES", "SyncRedisCluster", "AsyncRedisCluster", "ACL_WORKER", "ACL_PRODUCER", "ACL_READONLY",
    "DEFAULT_PORT", "DEFAULT_SENTINEL_PORT",
]
