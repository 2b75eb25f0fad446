"""Dramatiq: no-op and latency actors; served by ``dramatiq bench.peers.peer_dramatiq -p 2 -t N``.

Completion is read from Dramatiq's own message hash ``dramatiq:default.msgs``: a message leaves
it when it is acked, after its actor ran.
"""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import _common

ENQUEUE_METHOD = "Actor.send, one at a time (Dramatiq has no batch enqueue; group() sends one by one)"

broker = RedisBroker(url=_common.redis_url())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default")
def noop() -> None:
    pass


@dramatiq.actor(queue_name="default")
def record(sample: int) -> None:
    _common.record_sync(sample)


def make_client():
    return broker


def enqueue_noops(_broker, n: int) -> None:
    send = noop.send
    for _ in range(n):
        send()


def enqueue_record(_broker, sample: int) -> None:
    record.send(sample)
