"""What the fastq-only benchmark scripts share (run them as ``python -m bench.<name>``)."""
from __future__ import annotations

import time
from typing import Union

import redis


def ping_rate(target: Union[str, redis.Redis], seconds: float = 0.5) -> float:
    """Single-connection PING round trips per second over ``seconds``, through redis-py (a URL, or
    a client whose connection is used): the box's load, printed beside each figure."""
    r = redis.Redis.from_url(target) if isinstance(target, str) else target
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        r.ping()
        n += 1
    if isinstance(target, str):
        r.close()
    return n / seconds
