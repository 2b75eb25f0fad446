"""How fastq connects to Redis: one description for every part of fastq (the ``fastq.redis`` package).

The client, workers, supervisor, scheduler, inspector, CLI and dashboard all build their
Redis client from the same description, either a URL or an option object mirroring Go
Asynq's ``RedisClientOpt`` / ``RedisFailoverClientOpt`` / ``RedisClusterClientOpt``:

=====================================================================  ===============================
``redis://[user:pass@]host[:port][/db]``                               one Redis (``RedisClientOpt``)
``rediss://...?tls_ca=ca.pem&tls_cert=c.pem&tls_key=k.pem``            the same over TLS
``unix://[user:pass@]/path/redis.sock[?db=N]``                         a Unix socket
``redis-socket://[:pass@]/path/redis.sock[?db=N]``                     Asynq's spelling of it
``redis+sentinel://[user:pass@]h1:p1,h2:p2[/db]?master=NAME``          Sentinel (``RedisFailoverClientOpt``)
``rediss+sentinel://...``                                              Sentinel, TLS to sentinels and data nodes
``redis-sentinel://[:pass@]h1:p1,h2:p2[/db]?master=NAME``              Asynq's spelling: the password is the Sentinels'
``redis+cluster://[user:pass@]h1:p1,h2:p2``                            Redis Cluster (``RedisClusterClientOpt``)
``rediss+cluster://...``                                               Redis Cluster over TLS
=====================================================================  ===============================

Query options (any form, where they apply): ``db``; ``tls_ca``, ``tls_cert``, ``tls_key``,
``tls_server_name`` (redis-py's ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` are accepted
too); ``socket_timeout``, ``socket_connect_timeout`` (seconds), ``max_connections``;
Sentinel: ``master`` (required), ``sentinel_username``, ``sentinel_password``; Cluster:
``max_redirects``; ``durability=replicated`` with ``replicas`` (default 1) and
``replica_timeout`` (seconds, default 1). Anything else is refused.

TLS verification is always on: the server's certificate must chain to ``tls_ca`` (or the
system store) and name the host connected to (or ``tls_server_name``). There is no switch to
turn it off; a failed handshake raises ``TLSHandshakeError`` saying what to fix. A handshake
times out after ``socket_connect_timeout`` (unset: 5 s, or ``socket_timeout`` if shorter); one
that times out because the port speaks plain text (``rediss://`` for a ``redis://`` port) says so.

``durability="replicated"`` makes every script call (every enqueue) wait for ``replicas``
replicas to acknowledge the write (``WAIT``), and raise ``NotReplicatedError`` when they did
not within ``replica_timeout``: an enqueue that returned is then on a replica too and survives
a failover. Workers ignore it (a lost acknowledgement means a re-run, never a lost task).

Bad input - a URL, an option, a TLS file - raises ``ConnectionConfigError`` (a ``ValueError``)
naming what is wrong, before anything connects. ``fatal_reason(exc)`` tells the errors of a
connection that no retry can fix (wrong password or user, a missing ACL permission, an unknown
host, a failed TLS handshake) from transient ones; ``preflight(url)`` PINGs once at start-up and
raises ``RedisConfigurationError`` for the former. Passwords never appear in reprs, logs or
errors: ``redact()`` masks them.

The modules: ``url`` (URL forms, redaction), ``options`` (option objects, ``TLSConfig``), ``tls``
(TLS connections), ``sentinel``, ``cluster``, ``durability`` (``WAIT``), ``connections`` (classes
assembled from those mixins), ``clients`` (building clients), ``facade`` (``sync_client`` /
``async_client`` for any target, ``default_url``), ``startup`` (fatal or transient errors, the
start-up PING), ``acl`` (least-privilege rule sets). ``fastq.connection`` is the old name of this
package, kept for compatibility.
"""
from __future__ import annotations

from fastq.errors import RedisConfigurationError
from fastq.redis.acl import ACL_PRODUCER, ACL_READONLY, ACL_WORKER
from fastq.redis.clients import pubsub_client, with_tls
from fastq.redis.cluster import AsyncRedisCluster, SyncRedisCluster, is_cluster
from fastq.redis.errors import (
    ClusterUnavailableError,
    ConnectionConfigError,
    NotReplicatedError,
    TLSHandshakeError,
)
from fastq.redis.facade import (
    DEFAULT_URL,
    async_client,
    check_bytes_client,
    default_url,
    sync_client,
)
from fastq.redis.options import (
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
    "RedisConfigurationError", "fatal_reason", "preflight", "default_url", "DEFAULT_URL", "check_bytes_client",
    "as_options", "with_tls", "pubsub_client", "OPTION_TYPES", "SyncRedisCluster", "AsyncRedisCluster",
    "ACL_WORKER", "ACL_PRODUCER", "ACL_READONLY",
]
