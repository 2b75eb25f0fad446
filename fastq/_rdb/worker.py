"""The worker's Redis operations: the one seam between ``fastq.server`` and Redis.

``Broker`` runs them on the worker's ``redis.asyncio`` client; ``SyncBroker`` runs the few that
threads and the supervisor need on a synchronous client. Both build their calls with the same
plain functions below (``settle_calls``, ``list_claims_call``, ...) and differ only in running
them with ``execute`` or ``aexecute`` (``fastq._rdb.calls``: one round trip, NOSCRIPT handled).

Nothing here holds task state: the processor decides, this module writes. It owns the key
layout of each call (the dequeue KEYS, the stats keys of an outcome) and the parsing of replies
(``Claim``s in, missing IDs out). On Redis Cluster each script call stays within one queue's
hash slot: a dequeue over several queues is one call per queue, in order.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Optional, Sequence

from redis.exceptions import ResponseError

from fastq import keys
from fastq._codec import encode_message
from fastq._rdb import flow
from fastq._rdb import scripts as _s
from fastq._rdb.calls import Call, adrive, aexecute, asend, cmd, execute, script, send
from fastq._rdb.outcome import Advance, Archive, Claim, Complete, Done, Outcome, Requeue, Retry
from fastq.redis.cluster import is_cluster

__all__ = ["Broker", "SyncBroker", "settle_calls", "missing_ids", "utc_date", "is_cluster", "LEASE_MARGIN",
           "STATS_TTL", "ARCHIVE_MAX_SIZE", "ARCHIVE_MAX_AGE", "DEQUEUE_KEY_TYPES"]

STATS_TTL = 90 * 24 * 3600  # daily counters live 90 days, as in Asynq
ARCHIVE_MAX_SIZE = 10_000
ARCHIVE_MAX_AGE = 90 * 24 * 3600
# A lease set by a call that started at local time T stays valid until T + lease: Redis stamps
# expiry = floor(server time) + lease and recoverers take a lease only once its score is
# below the (whole-second) Redis time. The margin covers timer and scheduling slop.
LEASE_MARGIN = 0.5
# The types the dequeue script expects of a queue's keys (any other: WRONGTYPE).
DEQUEUE_KEY_TYPES = (("pending", "list"), ("paused", "string"), ("active", "list"), ("lease", "zset"),
                     ("fastq_flow", "hash"))


def utc_date(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


# ------------------------------------------------------------------ call builders

def dequeue_keys(queue: str) -> list[str]:
    """The five KEYS of one queue in a dequeue call, in the script's order."""
    return [keys.pending_key(queue), keys.paused_key(queue), keys.active_key(queue), keys.lease_key(queue),
            keys.flow_links_key(queue)]


def settle_calls(outcomes: Iterable[Outcome], now: float, cutoff: str = "") -> list[Call]:
    """The script calls that write ``outcomes``: one per (kind, queue), in first-seen order.

    Each outcome is written only if its task is still active with the outcome's lease token
    (``""``: no token check). With ``cutoff`` (Unix s) a task is settled only if its lease
    expired by then (recoverers). Each call replies with the IDs it did not settle."""
    groups: dict[tuple[type, str], list[Any]] = {}
    kind: Any = None
    q = ""
    group: list[Any] = []
    for o in outcomes:
        if o.__class__ is not kind or o.queue != q:  # outcomes of one kind and queue tend to come in runs
            kind, q = o.__class__, o.queue
            group = groups.setdefault((kind, q), [])
        group.append(o)
    date = utc_date(now)
    expire = int(now) + STATS_TTL
    calls = []
    for (kind, q), items in groups.items():
        if kind is Advance:  # successful workflow steps: settled and followed in one call
            calls.append(flow.advance_call(items, date, expire, cutoff))
            continue
        if kind is Archive:  # a workflow step archived ends its workflow: one flow_fail call each
            trim = (int(now) - ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE)
            calls += [flow.fail_call(a, date, expire, int(now), cutoff, trim) for a in items if a.link is not None]
            items = [a for a in items if a.link is None]
            if not items:
                continue
        active, lease, prefix = keys.active_key(q), keys.lease_key(q), keys.task_key_prefix(q)
        args: list[Any] = [expire, prefix, cutoff]
        if kind is Done:  # groups (token, unique key, n, n IDs): one argument per task
            token = unique = None
            n_at = 0
            for d in items:
                if d.token != token or d.unique_key != unique:
                    token, unique = d.token, d.unique_key
                    n_at = len(args) + 2
                    args += (token, unique, 0)
                args[n_at] += 1
                args.append(d.id)
            calls.append(script(_s.DONE, [active, lease, keys.processed_key(q, date), keys.processed_total_key(q)],
                                args))
        elif kind is Complete:
            for c in items:
                args += (c.id, c.token, c.expiry, encode_message(c.msg), c.unique_key,
                         b"" if c.result is None else b"1" + c.result)
            calls.append(script(_s.COMPLETE, [active, lease, keys.completed_key(q), keys.processed_key(q, date),
                                              keys.processed_total_key(q)], args))
        elif kind is Retry:
            for r in items:
                args += (r.id, r.token, encode_message(r.msg), r.retry_at, "1" if r.is_failure else "0")
            calls.append(script(_s.RETRY, [active, lease, keys.retry_key(q), *_stat_keys(q, date)], args))
        elif kind is Archive:
            args += (int(now), int(now) - ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE)
            for a in items:
                args += (a.id, a.token, a.msg if isinstance(a.msg, bytes) else encode_message(a.msg))
            calls.append(script(_s.ARCHIVE, [active, lease, keys.archived_key(q), *_stat_keys(q, date)], args))
        elif kind is Requeue:
            args = [prefix, cutoff]
            for rq in items:
                args += (rq.id, rq.token)
            calls.append(script(_s.REQUEUE, [active, lease, keys.pending_key(q)], args))
        else:  # pragma: no cover - programming error
            raise TypeError(f"not an outcome: {kind.__name__}")
    return calls


def missing_ids(replies: Sequence[Any]) -> list[bytes]:
    """The IDs the settle calls did not settle (no longer held with that token), as bytes."""
    return [tid for reply in replies for tid in reply]


def _stat_keys(q: str, date: str) -> list[str]:
    return [keys.processed_key(q, date), keys.failed_key(q, date), keys.processed_total_key(q),
            keys.failed_total_key(q)]


def list_lease_expired_call(queue: str, grace: float, limit: int) -> Call:
    return script(_s.LIST_LEASE_EXPIRED, [keys.lease_key(queue), keys.flow_links_key(queue)],
                  [grace, keys.task_key_prefix(queue), limit])


def list_claims_call(queue: str, server_id: str) -> Call:
    """The active tasks of ``queue`` claimed by the worker ``server_id`` (tokens ``"<id>:<n>"``)."""
    return script(_s.LIST_CLAIMS, [keys.lease_key(queue), keys.flow_links_key(queue)],
                  [keys.task_key_prefix(queue), f"{server_id}:"])


def parse_claims(queue: str, reply: Sequence[Any]) -> list[Claim]:
    """``LIST_CLAIMS``'s reply ``[id, token, msg, link, ...]`` as claims. The token matched
    ``"<server id>:"``: ours, ASCII; the ID and message may hold any bytes."""
    return [Claim(queue, reply[i], reply[i + 2] or None, reply[i + 1].decode("utf-8", "backslashreplace"),
                  link=reply[i + 3] or None)
            for i in range(0, len(reply), 4)]


def extend_lease_call(queue: str, lease: int, ids: Sequence[str]) -> Call:
    return script(_s.EXTEND_LEASE, [keys.lease_key(queue)], [lease, *ids])


def clear_server_state_calls(server_key: str, workers_key: str) -> list[Call]:
    """Deregister a server (its info, its workers' info): one key per DEL, as keys of one call
    would be in different hash slots on Redis Cluster."""
    return [cmd("zrem", keys.ALL_SERVERS, server_key), cmd("zrem", keys.ALL_WORKERS, workers_key),
            cmd("delete", server_key), cmd("delete", workers_key)]


# ------------------------------------------------------------------ the async seam

class Broker:
    """The worker's Redis operations on its ``redis.asyncio`` client (``redis``)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.cluster = is_cluster(redis)
        self._layouts: dict[tuple[str, ...], tuple[list[str], list[Any]]] = {}

    def _layout(self, names: tuple[str, ...]) -> tuple[list[str], list[Any]]:
        """(KEYS, task-key prefixes) of a dequeue over ``names`` in that order; cached."""
        layout = self._layouts.get(names)
        if layout is None:
            if len(self._layouts) >= 256:  # weighted orders of many queues: keep the cache bounded
                self._layouts.clear()
            layout = self._layouts[names] = ([k for q in names for k in dequeue_keys(q)],
                                             [keys.task_key_prefix(q) for q in names])
        return layout

    async def dequeue(self, queue_names: Sequence[str], count: int, lease: int, token: str) -> list[Claim]:
        """Claim up to ``count`` tasks from the first ready queue of ``queue_names`` (not paused,
        something pending), in one script call; on Redis Cluster one call per queue in the same
        order (queues live in different slots). Each claim's lease is ``lease`` seconds of Redis
        time, and certainly valid until ``lease_until`` (monotonic) by this process's clock."""
        started = time.monotonic()
        if not self.cluster:
            names = tuple(queue_names)
            dkeys, prefixes = self._layout(names)
            (reply,) = await aexecute(self.redis, [script(_s.DEQUEUE, dkeys, [count, lease, token, *prefixes])])
            if not reply:
                return []
            queue = names[reply[0] - 1]
        else:
            for queue in queue_names:
                dkeys, prefixes = self._layout((queue,))
                (reply,) = await aexecute(self.redis, [script(_s.DEQUEUE, dkeys, [count, lease, token, *prefixes])])
                if reply:
                    break
            else:
                return []
        until = started + lease - LEASE_MARGIN
        claims = [Claim(queue, reply[i], reply[i + 1], token, until) for i in range(3, len(reply), 2)]
        links = reply[2]
        for i in range(0, len(links), 2):  # workflow steps: usually none
            claims[links[i] - 1].link = links[i + 1]
        return claims

    async def settle(self, outcomes: Iterable[Outcome], now: Optional[float] = None, cutoff: str = "") -> list[bytes]:
        """Write ``outcomes`` in one round trip; return the IDs that were not settled (bytes)."""
        calls = settle_calls(outcomes, time.time() if now is None else now, cutoff)
        return missing_ids(await aexecute(self.redis, calls)) if calls else []

    async def forward(self, queues: Iterable[str], batch: int = 100) -> int:
        """Move due scheduled and retry tasks of ``queues`` to pending; return how many moved."""
        total = 0
        sources = [(q, src) for q in queues for src in (keys.scheduled_key(q), keys.retry_key(q))]
        while sources:
            calls = [script(_s.FORWARD, [src, keys.pending_key(q), keys.groups_key(q)],
                            [keys.task_key_prefix(q), keys.group_key_prefix(q), batch])
                     for q, src in sources]
            moved = await aexecute(self.redis, calls)
            total += sum(moved)
            sources = [s for s, n in zip(sources, moved, strict=True) if n >= batch]
        return total

    async def heartbeat(self, server_key: str, workers_key: str, ttl: int, info: bytes,
                        workers: list[tuple[str, bytes]]) -> Optional[dict[str, Any]]:
        """One heartbeat in one round trip: write server and worker info (Asynq's writeServerState
        with its two ZADDs) and read ``INFO server`` (None if denied). Leases are not extended here
        (``fastq.server.leases``): a refused server-state write (Redis full) must not cost them."""
        args: list[Any] = [ttl, info]
        for tid, data in workers:
            args += (tid, data)
        expiry = int(time.time()) + ttl
        calls = [cmd("zadd", keys.ALL_SERVERS, {server_key: expiry}),
                 cmd("zadd", keys.ALL_WORKERS, {workers_key: expiry}),
                 script(_s.WRITE_SERVER_STATE, [server_key, workers_key], args)]
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
        await aexecute(self.redis, clear_server_state_calls(server_key, workers_key))

    async def janitor(self, queues: Iterable[str], batch: int) -> int:
        """Delete the completed tasks of ``queues`` whose retention ended, ``batch`` at a time
        until a batch is not full; return how many were deleted."""
        total = 0
        for q in queues:
            call = script(_s.JANITOR, [keys.completed_key(q)], [keys.task_key_prefix(q), batch])
            while True:
                (n,) = await aexecute(self.redis, [call])
                total += n
                if n < batch:
                    break
        return total

    async def flow_sweep(self, queues: Iterable[str]) -> int:
        """End the workflows whose step's task is gone while its link is still stored
        (``fastq._rdb.flow.sweep``); the number ended."""
        ended = 0
        for q in queues:
            ended += await adrive(self.redis, flow.sweep(q))
        return ended

    async def list_lease_expired(self, queue: str, grace: float, limit: int) -> tuple[str, list[Claim]]:
        """Up to ``limit`` tasks of ``queue`` whose lease ended more than ``grace`` seconds ago by
        Redis time, and that cutoff (Unix s, as the ``cutoff`` to settle them with). The claims
        have no token (``""``: settled whoever holds them, if still expired at the cutoff)."""
        (reply,) = await aexecute(self.redis, [list_lease_expired_call(queue, grace, limit)])
        claims = [Claim(queue, reply[i], reply[i + 1] or None, "", link=reply[i + 2] or None)
                  for i in range(1, len(reply), 3)]
        return str(int(reply[0])), claims

    async def list_claims(self, queues: Iterable[str], server_id: str) -> list[Claim]:
        """The active tasks of ``queues`` claimed by the worker ``server_id``."""
        claims: list[Claim] = []
        for q in queues:
            claims += parse_claims(q, (await aexecute(self.redis, [list_claims_call(q, server_id)]))[0])
        return claims

    async def wrong_key_types(self, queue: str) -> list[tuple[str, str, str]]:
        """``(key, type, expected type)`` of each of ``queue``'s dequeue keys of the wrong type."""
        types = await self.key_types(queue)
        return [(key, got, want) for (key, got), (_, want) in zip(types.items(), DEQUEUE_KEY_TYPES, strict=True)
                if got not in ("none", want)]

    async def key_types(self, queue: str) -> dict[str, str]:
        """The Redis type of each of ``queue``'s dequeue keys (``"none"``: no such key), in the
        order of ``DEQUEUE_KEY_TYPES``."""
        names = dequeue_keys(queue)
        replies = await aexecute(self.redis, [cmd("type", key) for key in names])
        return {key: t.decode() if isinstance(t, bytes) else str(t) for key, t in zip(names, replies, strict=True)}

    async def register_queues(self, queues: Iterable[str]) -> None:
        """Add ``queues`` to ``asynq:queues`` (what the Inspector, CLI and asynqmon list)."""
        await aexecute(self.redis, [cmd("sadd", keys.ALL_QUEUES, *queues)])

    async def load_scripts(self) -> int:
        """SCRIPT LOAD every script Redis does not have yet (SCRIPT EXISTS first: once one worker of
        a fleet has loaded them, the others read and send no sources), so the first calls need no
        NOSCRIPT round trip. The number of scripts loaded."""
        scripts = list(_s.SCRIPTS.values())
        try:
            (have,) = await aexecute(self.redis, [cmd("script_exists", *[s.sha for s in scripts])])
        except ResponseError:  # an ACL user without +script|exists (older worker rules): load them all
            have = [False] * len(scripts)
        missing = [s for s, loaded in zip(scripts, have, strict=True) if not loaded]
        if missing:
            await aexecute(self.redis, [cmd("script_load", s.source) for s in missing])
        return len(missing)

    async def write_result(self, queue: str, task_id: str, data: bytes) -> bool:
        """Set the task's ``result`` field; False when the task hash is gone (never created)."""
        (reply,) = await aexecute(self.redis, [script(_s.WRITE_RESULT, [keys.task_key(queue, task_id)], [data])])
        return bool(reply)


# ------------------------------------------------------------------ the sync seam

class SyncBroker:
    """The operations run on a synchronous client: the supervisor's recovery of a dead worker's
    tasks, and the lease thread's extensions. The calls are those of ``Broker``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = is_cluster(client)

    def list_claims(self, queues: Iterable[str], server_id: str) -> list[Claim]:
        """The active tasks of ``queues`` claimed by the worker ``server_id``."""
        return [c for q in queues for c in parse_claims(q, execute(self.client, [list_claims_call(q, server_id)])[0])]

    def settle(self, outcomes: Iterable[Outcome], now: Optional[float] = None, cutoff: str = "") -> list[bytes]:
        calls = settle_calls(outcomes, time.time() if now is None else now, cutoff)
        return missing_ids(execute(self.client, calls)) if calls else []

    def clear_server_state(self, server_key: str, workers_key: str) -> None:
        execute(self.client, clear_server_state_calls(server_key, workers_key))

    def extend_leases(self, held: dict[str, list[str]], lease: int
                      ) -> tuple[dict[str, list[str]], Optional[BaseException]]:
        """Push the leases of ``held`` (IDs by queue) to Redis time + ``lease``; never creates or
        shortens one. One round trip for all queues (one call per queue on Redis Cluster).

        Returns the IDs whose queue's call succeeded, and the first error (None when all did):
        what was extended counts even when another queue's call failed."""
        queues = list(held)
        calls = [extend_lease_call(q, lease, held[q]) for q in queues]
        replies: list[Any] = []
        error: Optional[BaseException] = None
        if self.cluster:  # one call per queue (each in its own hash slot); stop at the first failure
            try:
                for call in calls:
                    replies += execute(self.client, [call])
            except Exception as exc:  # noqa: BLE001 - handed to the caller with what did succeed
                error = exc
        else:
            try:
                replies = send(self.client, calls)
            except Exception as exc:  # noqa: BLE001
                error = exc
        extended = {q: held[q] for q, reply in zip(queues, replies, strict=False) if not isinstance(reply, Exception)}
        if error is None:
            error = next((reply for reply in replies if isinstance(reply, Exception)), None)
        return extended, error
