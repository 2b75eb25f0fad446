"""Errors of connecting to Redis: bad configuration, TLS handshakes, WAIT, an unavailable cluster."""
from __future__ import annotations

import redis

from fastq.errors import FastqError

# ---------------------------------------------------------------- errors

class ConnectionConfigError(FastqError, ValueError):
    """A Redis URL, connection option or TLS file fastq cannot use; nothing was connected."""


class TLSHandshakeError(FastqError, redis.exceptions.ConnectionError):
    """The TLS handshake failed: the server's certificate was not trusted or does not name the
    host, or the server refused ours. Never retried into a plain-text connection.

    ``plain_text``: the port does not speak TLS (it answered a plain-text PING, or with bytes
    that are not TLS): the URL should be ``redis://``. ``timed_out``: the server accepted the
    TCP connection but did not finish the handshake in time (and is not a plain-text Redis).
    """

    def __init__(self, message: str = "", *, plain_text: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.plain_text = plain_text
        self.timed_out = timed_out


class NotReplicatedError(FastqError, redis.exceptions.RedisError):
    """``durability="replicated"``: the write is on the primary but fewer replicas than asked
    acknowledged it in time, so a failover now could lose it.

    ``task_ids`` names the tasks of that write. Enqueue them again with the same
    ``task_id``: ``TaskIDConflictError`` then means the first write was kept.
    """

    def __init__(self, acked: int, wanted: int, timeout: float, task_ids: list[str]) -> None:
        self.acked = acked
        self.wanted = wanted
        self.timeout = timeout
        self.task_ids = task_ids
        shown = ", ".join(task_ids[:3]) + (f" (+{len(task_ids) - 3} more)" if len(task_ids) > 3 else "")
        super().__init__(
            f"write reached {acked} of {wanted} replica(s) within {timeout:g}s; it is on the primary only and a "
            f"failover could lose it" + (f" (task IDs: {shown})" if task_ids else "")
            + "; enqueue again with the same task_id (TaskIDConflictError then means it was kept)")


class ClusterUnavailableError(FastqError, redis.exceptions.ConnectionError):
    """No cluster node answers, or a slot has no node (during a failover): a transient
    connection error for fastq's retry loops, not redis-py's ``RedisClusterException``."""
