"""The pub/sub listener: cancellations (``asynq:cancel``) and wake-ups (``fastq_notify``)."""
from __future__ import annotations

import asyncio
from typing import Any, Iterable

from redis.exceptions import RedisError

from fastq import keys
from fastq.connection import pubsub_client
from fastq.server.maintenance import sleep_until_set
from fastq.server.processor import Processor


async def pubsub_listener(redis: Any, processor: Processor, queues: Iterable[str], stop: asyncio.Event) -> None:
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
