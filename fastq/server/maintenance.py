"""Periodic upkeep each worker runs: forward due tasks, recover expired leases.

Several workers doing the same upkeep never conflict: every move is one atomic
script, and a task already moved by another worker is simply not found.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional, Union

from redis.exceptions import RedisError

from fastq import _scripts, keys
from fastq._codec import decode_message
from fastq.connection import pubsub_client
from fastq.errors import DecodeError
from fastq.server.broker import ARCHIVE, RETRY, Broker, group_by
from fastq.server.config import WorkerConfig
from fastq.server.health import noop_health
from fastq.server.processor import Processor, archive_unusable

log = logging.getLogger("fastq.maintenance")

LEASE_EXPIRED = "asynq: task lease expired"
RECOVER_BATCH = 500


async def sleep_until_set(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def forward_loop(broker: Broker, cfg: WorkerConfig, stop: asyncio.Event, health=None) -> None:
    """Move due scheduled and retry tasks to pending every ``forward_interval`` until ``stop`` is set."""
    health = health or noop_health()
    while not stop.is_set():
        try:
            moved = await broker.forward(cfg.queues)
            if moved:
                log.debug("forwarded %d due task(s)", moved)
            health.ok("forward")
        except (RedisError, OSError) as exc:
            health.failed("forward", exc)
        await sleep_until_set(stop, cfg.forward_interval)


async def recover_once(broker: Broker, processor: Processor, cfg: WorkerConfig) -> int:
    """Send tasks whose lease expired to retry (or archive when retries are exhausted).

    Listing and settling are two steps, so the settling scripts re-check, atomically,
    that each lease is still expired at the listing's cutoff: a lease its owner extended
    in between is left alone, and of several recoverers racing only one settles a task.
    """
    now = time.time()
    recovered = 0
    for q in cfg.queues:
        reply = await _scripts.LIST_LEASE_EXPIRED.arun(
            broker.redis, [keys.lease_key(q)], [cfg.recover_grace, keys.task_key_prefix(q), RECOVER_BATCH])
        if len(reply) < 3:
            continue
        cutoff, items = int(reply[0]), []
        for i in range(1, len(reply), 2):
            item = lost_claim(q, reply[i], reply[i + 1], LEASE_EXPIRED, now, cfg, "", processor)
            if item is not None:
                items.append(item)
        if items:
            missing = await broker.write_acks(group_by(items), now, cutoff=str(cutoff))
            recovered += len(items) - len(missing)
    if recovered:
        log.warning("recovered %d task(s) whose lease expired", recovered)
    return recovered


def lost_claim(q: str, raw_id: bytes, raw: bytes, reason: str, now: float, cfg: WorkerConfig, token: str,
               processor: Optional[Processor] = None) -> Optional[tuple]:
    """The outcome of a claim whose worker is gone, from the bytes Redis holds: a counted failed
    attempt (``settle_lost``); an ID that is not UTF-8, or a message that is missing or cannot be
    decoded, is archived with the reason. None: the claim is this (living) process's own."""
    try:
        tid: Union[str, bytes] = raw_id.decode()
    except UnicodeDecodeError:
        if processor is not None and raw_id in processor.unacked:
            return None  # this process is archiving it already
        tid = raw_id
        why = "task ID is not valid UTF-8"
    else:
        if processor is not None and (tid in processor.running or tid in processor.unacked):
            return None  # ours and alive: the next lease extension covers it
        why = "" if raw else "task hash has no message"
        if raw:
            try:
                return settle_lost(q, tid, decode_message(raw), reason, now, cfg, token)
            except DecodeError as exc:
                why = f"cannot decode task message: {exc}"
    return archive_unusable(q, tid, token, raw or b"", why, now)


def settle_lost(q: str, tid: str, msg, reason: str, now: float, cfg: WorkerConfig, token: str = "") -> tuple:
    """The outcome of a task whose worker is gone: a counted failed attempt."""
    msg.error_msg = reason
    msg.last_failed_at = int(now)
    if msg.retried >= msg.retry:
        return (ARCHIVE, q, (tid, token, msg))
    msg.retried += 1
    return (RETRY, q, (tid, token, msg, int(now + cfg.recover_retry_delay), True))


async def janitor_loop(broker: Broker, cfg: WorkerConfig, stop: asyncio.Event, health=None) -> None:
    """Delete completed tasks whose retention ended, in batches, every ``janitor_interval``."""
    health = health or noop_health()
    while not stop.is_set():
        try:
            for q in cfg.queues:
                while await _scripts.JANITOR.arun(broker.redis, [keys.completed_key(q)],
                                                  [keys.task_key_prefix(q), cfg.janitor_batch]) >= cfg.janitor_batch:
                    pass
            health.ok("janitor")
        except (RedisError, OSError) as exc:
            health.failed("janitor", exc)
        await sleep_until_set(stop, cfg.janitor_interval)


async def pubsub_listener(redis, processor: Processor, queues, stop: asyncio.Event) -> None:
    """Listen on ``asynq:cancel`` (cancel running tasks, from fastq or Go's Inspector) and on the
    queues' ``fastq_notify`` channels (wake the idle fetch loop when a queue gets tasks).

    Re-subscribes after connection errors (Asynq retries every 5 s; fastq backs off 0.1-5 s).
    A wake-up lost while re-subscribing costs at most one poll interval.
    """
    notify = {keys.notify_channel(q).encode() for q in queues}
    delay = 0.1
    attempt = 0
    while not stop.is_set():
        # On Redis Cluster: a plain connection to one node (PUBLISH reaches every node), another
        # node after each failure. Elsewhere the worker's own client.
        source, owned = pubsub_client(redis, attempt)
        attempt += 1
        pubsub = source.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.CANCEL_CHANNEL, *notify)
            processor.wake()  # anything enqueued while we were not subscribed is picked up now
            delay = 0.1
            while not stop.is_set():
                message = await pubsub.get_message(timeout=0.1)
                if not message or message.get("type") != "message":
                    continue
                channel = message["channel"]
                if channel in notify:
                    processor.wake()
                else:
                    data = message["data"]
                    if isinstance(data, bytes):  # anyone may publish: no byte may stop this listener
                        data = data.decode("utf-8", "backslashreplace")
                    processor.cancel(str(data))
        except (RedisError, OSError) as exc:
            processor.redis_error("pubsub", exc)
            await sleep_until_set(stop, delay)
            delay = min(delay * 2, 5.0)
        finally:
            try:
                await pubsub.aclose()
                if owned:
                    await source.aclose()
            except (RedisError, OSError):
                pass


async def recover_loop(broker: Broker, processor: Processor, cfg: WorkerConfig, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await recover_once(broker, processor, cfg)
            processor.health.ok("recover")
        except (RedisError, OSError) as exc:
            processor.redis_error("recover", exc)
        await sleep_until_set(stop, cfg.recover_interval)
