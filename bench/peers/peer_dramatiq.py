"""Dramatiq: no-op and latency actors; served by ``dramatiq bench.peers.peer_dramatiq -p 2 -t N``.

Completion is read from Dramatiq's own message hash ``dramatiq:default.msgs``: a message leaves
it when it is acked, after its actor ran. The AsyncIO middleware is added for the async no-op
actor (``bench.compare`` drains with each kind).
"""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO

from bench.peers import _common

ENQUEUE_METHOD = "Actor.send, one at a time (Dramatiq has no batch enqueue; group() sends one by one)"

KINDS = ("sync", "async")  # async actors run on the AsyncIO middleware's event loop thread

broker = RedisBroker(url=_common.redis_url())
broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default")
def noop() -> None:
    pass


@dramatiq.actor(queue_name="default")
async def noop_async() -> None:
    pass


@dramatiq.actor(queue_name="default")
def record(sample: int) -> None:
    _common.record_sync(sample)


def make_client():
    return broker


def enqueue_noops(_broker, n: int, kind: str = "sync") -> None:
    send = noop.send if kind == "sync" else noop_async.send
    for _ in range(n):
        send()


def enqueue_record(_broker, sample: int) -> None:
    record.send(sample)
