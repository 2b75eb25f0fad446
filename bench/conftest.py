"""Benchmark fixtures: a private redis-server (persistence off) for the Redis-bound runs."""
from __future__ import annotations

import pytest
import redis

from fastq.devserver import DevServer


@pytest.fixture(scope="session")
def bench_redis_url():
    with DevServer() as server:
        yield server.url


@pytest.fixture
def bench_redis(bench_redis_url):
    client = redis.Redis.from_url(bench_redis_url)
    client.flushall()
    yield client
    client.close()
