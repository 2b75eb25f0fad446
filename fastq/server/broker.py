"""The worker's Redis operations: one async method per script, batched where possible.

Nothing here holds task state; the processor decides, this module writes.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Iterable, Sequence

from fastq import keys
from fastq._codec import encode_message
from fastq._rdb import scripts as _scripts
from fastq._rdb.calls import Call, aexecute, asend, cmd, script

STATS_TTL = 90 * 24 * 3600  # daily counters live 90 days, as in Asynq
ARCHIVE_MAX_SIZE = 10_000
ARCHIVE_MAX_AGE = 90 * 24 * 3600

# Ack kinds, in the order a flush writes them.
DONE, COMPLETE, RETRY, ARCHIVE, REQUEUE = "done", "complete", "retry", "archive", "requeue"


def utc_date(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def is_cluster(redis: Any) -> bool:
    """True for a Redis Cluster client (every script call must stay within one queue's slot)."""
    from fastq.connection import is_cluster as _is_cluster

    return _is_cluster(redis)


class Broker:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.cluster = is_cluster(redis)

    async def dequeue(self, dequeue_keys: list, prefixes: list, count: int, lease: int, token: str) -> list:
        """Claim up to ``count`` tasks from the first ready queue, in one script call; on Redis
        Cluster one call per queue in the same order (queues live in different slots)."""
        if not self.cluster:
            return (await aexecute(self.redis, [script(_scripts.DEQUEUE, dequeue_keys,
                                                       [count, lease, token, *prefixes])]))[0]
        for i, prefix in enumerate(prefixes):
            (reply,) = await aexecute(self.redis, [script(_scripts.DEQUEUE, dequeue_keys[4 * i:4 * i + 4],
                                                          [count, lease, token, prefix])])
            if reply:
                reply[0] = i + 1
                return reply
        return []

    async def pipeline(self, calls: Sequence[Call]) -> list:
        """Run calls in one round trip (``fastq._rdb.calls``: scripts reloaded after NOSCRIPT)."""
        return await aexecute(self.redis, calls) if calls else []

    @staticmethod
    def ack_calls(batch: dict, now: float, cutoff: str = "") -> list:
        """Script calls that write a batch of outcomes.

        ``batch`` maps ``(kind, queue)`` to a list of items, each starting with the task id
        and the lease token of the claim (``""`` = no token check): DONE ``(id, token,
        unique_key)``; COMPLETE ``(id, token, expiry, msg, unique_key, result bytes or None)``; RETRY ``(id, token,
        msg, retry_at, is_failure)``; ARCHIVE ``(id, token, msg)``; REQUEUE ``(id, token)``.
        Messages are TaskMessage objects (or already-encoded bytes for ARCHIVE). With
        ``cutoff`` (Unix s) a task is settled only if its lease expired by then (recoverers).
        """
        date = utc_date(now)
        expire = int(now) + STATS_TTL
        calls = []
        for (kind, q), items in batch.items():
            active, lease, prefix = keys.active_key(q), keys.lease_key(q), keys.task_key_prefix(q)
            args: list = [expire, prefix, cutoff]
            if kind == DONE:
                for item in items:
                    args += item
                calls.append(script(_scripts.DONE, [active, lease, keys.processed_key(q, date),
                                                    keys.processed_total_key(q)], args))
            elif kind == COMPLETE:
                for tid, token, expiry, msg, ukey, result in items:
                    args += (tid, token, expiry, encode_message(msg), ukey,
                             b"" if result is None else b"1" + result)
                calls.append(script(_scripts.COMPLETE, [active, lease, keys.completed_key(q),
                                                        keys.processed_key(q, date), keys.processed_total_key(q)],
                                    args))
            elif kind == RETRY:
                for tid, token, msg, retry_at, failure in items:
                    args += (tid, token, encode_message(msg), retry_at, "1" if failure else "0")
                calls.append(script(_scripts.RETRY, [active, lease, keys.retry_key(q), *_stat_keys(q, date)], args))
            elif kind == ARCHIVE:
                args += (int(now), int(now) - ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE)
                for tid, token, msg in items:
                    args += (tid, token, msg if isinstance(msg, bytes) else encode_message(msg))
                calls.append(script(_scripts.ARCHIVE, [active, lease, keys.archived_key(q), *_stat_keys(q, date)],
                                    args))
            elif kind == REQUEUE:
                args = [prefix, cutoff]
                for item in items:
                    args += item
                calls.append(script(_scripts.REQUEUE, [active, lease, keys.pending_key(q)], args))
            else:  # pragma: no cover - programming error
                raise ValueError(kind)
        return calls

    async def write_acks(self, batch: dict, now: float | None = None, cutoff: str = "") -> list:
        """Write the outcomes in ``batch``; return the IDs that were not settled (as bytes)."""
        replies = await self.pipeline(self.ack_calls(batch, time.time() if now is None else now, cutoff))
        return [tid for reply in replies for tid in reply]

    async def forward(self, queues: Iterable[str], batch: int = 100) -> int:
        """Move due scheduled and retry tasks of ``queues`` to pending; return how many moved."""
        queues = list(queues)
        total = 0
        sources = [(q, src) for q in queues for src in (keys.scheduled_key(q), keys.retry_key(q))]
        while sources:
            calls = [
                script(_scripts.FORWARD, [src, keys.pending_key(q), keys.groups_key(q)],
                       [keys.task_key_prefix(q), keys.group_key_prefix(q), batch])
                for q, src in sources
            ]
            moved = await self.pipeline(calls)
            total += sum(moved)
            sources = [s for s, n in zip(sources, moved, strict=False) if n >= batch]
        return total

    async def heartbeat(self, server_key: str, workers_key: str, ttl: int, info: bytes,
                        workers: list[tuple[str, bytes]]) -> dict | None:
        """One heartbeat in one round trip: write server and worker info (Asynq's writeServerState
        with its two ZADDs) and read ``INFO server`` (None if denied). Leases are not extended here
        (``fastq.server.leases``): a refused server-state write (Redis full) must not cost them."""
        args: list = [ttl, info]
        for tid, data in workers:
            args += (tid, data)
        expiry = int(time.time()) + ttl
        calls = [cmd("zadd", keys.ALL_SERVERS, {server_key: expiry}),
                 cmd("zadd", keys.ALL_WORKERS, {workers_key: expiry}),
                 script(_scripts.WRITE_SERVER_STATE, [server_key, workers_key], args)]
        if not self.cluster:  # a cluster has no single server to watch for restarts (nor pipelined INFO)
            calls.append(cmd("info", "server", "replication", "persistence"))
        replies = await asend(self.redis, calls)
        for reply in replies[:3]:
            if isinstance(reply, Exception):
                raise reply
        if self.cluster or isinstance(replies[3], Exception):  # INFO is in @dangerous: a least-privilege
            return None                                        # user may not run it
        return replies[3]  # type: ignore[no-any-return]

    async def clear_server_state(self, server_key: str, workers_key: str) -> None:
        await aexecute(self.redis, [cmd("zrem", keys.ALL_SERVERS, server_key),
                                    cmd("zrem", keys.ALL_WORKERS, workers_key),
                                    cmd("delete", server_key, workers_key)])


def _stat_keys(q: str, date: str) -> list[str]:
    return [keys.processed_key(q, date), keys.failed_key(q, date), keys.processed_total_key(q),
            keys.failed_total_key(q)]


def group_by(items: Iterable[tuple[str, str, Any]]) -> dict:
    """``[(kind, queue, item), ...]`` -> ``{(kind, queue): [item, ...]}``."""
    out: dict = defaultdict(list)
    for kind, q, item in items:
        out[(kind, q)].append(item)
    return out
