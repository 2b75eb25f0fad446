"""Lease recovery: tasks whose lease expired go to retry (or archive), as Asynq's recoverer.

A worker that died, hung or lost Redis stops extending the leases of its tasks; once a lease
has been expired ``recover_grace`` seconds by Redis time, any worker settles the task as a
failed attempt. Listing and settling are two steps, so the settling scripts re-check,
atomically, that each lease is still expired at the listing's cutoff: a lease its owner
extended in between is left alone, and of several recoverers racing only one settles a task.

``lost_claim`` (also used by the supervisor's recovery of a dead worker, ``recovery.py``) turns
a claim whose worker is gone into its outcome.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Optional, Union

from redis.exceptions import RedisError

from fastq._codec import TaskMessage, decode_message
from fastq._rdb.flow import Link, parse_link
from fastq._rdb.outcome import Archive, Claim, Outcome, Retry, TaskId
from fastq._rdb.worker import Broker
from fastq.errors import DecodeError
from fastq.server.config import WorkerConfig
from fastq.server.maintenance import sleep_until_set
from fastq.server.processor import Processor
from fastq.server.unusable import archive_unusable

log = logging.getLogger("fastq.maintenance")

LEASE_EXPIRED = "asynq: task lease expired"
RECOVER_BATCH = 500


async def recover_once(broker: Broker, processor: Processor, cfg: WorkerConfig) -> int:
    """Send tasks whose lease expired to retry (or archive when retries are exhausted); return
    how many were settled. The tasks ``processor`` still holds are its own: left alone."""
    now = time.time()
    recovered = 0
    for q in cfg.queues:
        cutoff, claims = await broker.list_lease_expired(q, cfg.recover_grace, RECOVER_BATCH)
        outcomes = [o for o in (lost_claim(c, LEASE_EXPIRED, now, cfg, processor.holds) for c in claims)
                    if o is not None]
        if outcomes:
            missing = await broker.settle(outcomes, now, cutoff=cutoff)
            recovered += len(outcomes) - len(missing)
    if recovered:
        log.warning("recovered %d task(s) whose lease expired", recovered)
    return recovered


def lost_claim(claim: Claim, reason: str, now: float, cfg: WorkerConfig,
               held: Optional[Callable[[TaskId], bool]] = None) -> Optional[Outcome]:
    """The outcome of a claim whose worker is gone, from the bytes Redis holds: a counted failed
    attempt (``settle_lost``); an ID that is not UTF-8, or a message that is missing or cannot be
    decoded, is archived with the reason. None when ``held(id)``: the claim is this (living)
    process's own (running, or its outcome not yet written)."""
    q, raw, token = claim.queue, claim.raw, claim.token
    tid: Union[str, bytes]
    try:
        tid = claim.raw_id.decode()
    except UnicodeDecodeError:
        if held is not None and held(claim.raw_id):
            return None  # this process is archiving it already
        tid = claim.raw_id
        why = "task ID is not valid UTF-8"
    else:
        if held is not None and held(tid):
            return None  # ours and alive: the next lease extension covers it
        why = "task hash has no message"
        if raw:
            try:
                return settle_lost(q, tid, decode_message(raw), reason, now, cfg, token, _link(claim))
            except DecodeError as exc:
                why = f"cannot decode task message: {exc}"
    return archive_unusable(q, tid, token, raw or b"", why, now)


def _link(claim: Claim) -> Optional[Link]:
    """The claim's workflow link; None for an ordinary task, or one whose link cannot be read
    (it is archived or retried all the same, without ending its workflow)."""
    if claim.link is None:
        return None
    try:
        return parse_link(claim.link)
    except ValueError:
        return None


def settle_lost(q: str, tid: str, msg: TaskMessage, reason: str, now: float, cfg: WorkerConfig,
                token: str = "", link: Optional[Link] = None) -> Union[Retry, Archive]:
    """The outcome of a task whose worker is gone: a counted failed attempt. A workflow step
    archived here ends its workflow, as one archived by its handler does."""
    msg.error_msg = reason
    msg.last_failed_at = int(now)
    if msg.retried >= msg.retry:
        return Archive(q, tid, token, msg, link)
    msg.retried += 1
    return Retry(q, tid, token, msg, int(now + cfg.recover_retry_delay), True)


async def recover_loop(broker: Broker, processor: Processor, cfg: WorkerConfig, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await recover_once(broker, processor, cfg)
            processor.health.ok("recover")
        except (RedisError, OSError) as exc:
            processor.redis_error("recover", exc)
        await sleep_until_set(stop, cfg.recover_interval)
