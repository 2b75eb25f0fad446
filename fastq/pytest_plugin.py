"""pytest fixtures for projects that use fastq; loaded automatically once fastq is installed
(entry point ``pytest11``, name ``fastq``; disable with ``-p no:fastq``).

Every fixture name starts with ``fastq_`` so it never clashes with a project's own:

``fastq_redis_url``
    URL of a real, private ``redis-server`` (started once per session on a free
    port with persistence off), emptied with ``FLUSHDB`` before each test. Set
    ``FASTQ_TEST_REDIS_URL`` to use a Redis you run yourself instead (its
    database is flushed before each test). Without either, the tests that use it
    are skipped with the reason, or fail when the ``CI`` environment variable is set.
``fastq_client``
    a ``fastq.Client`` on that Redis.
``fastq_worker``
    a factory: ``fastq_worker(handler_or_mux, **worker_config)`` returns a
    ``fastq.testing.WorkerHarness``; its ``drain()`` runs a worker in-process
    until the queue is empty and returns a ``DrainResult``.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Optional

import pytest

from fastq.devserver import INSTALL_HINT, DevServer, find_redis_server

TEST_URL_ENV = "FASTQ_TEST_REDIS_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def start_test_redis(find: Callable[[], Optional[str]] = find_redis_server) -> Optional[DevServer]:
    """Start the session's redis-server, or return None when ``FASTQ_TEST_REDIS_URL`` names one.

    When no ``redis-server`` is installed the calling test is skipped (failed
    under CI) with a message that says how to install one.
    """
    if os.environ.get(TEST_URL_ENV):
        return None
    binary = find()
    if binary is None:
        message = f"fastq_redis_url needs a real Redis: {INSTALL_HINT}, or set {TEST_URL_ENV}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return DevServer(binary).start()


@pytest.fixture(scope="session")
def fastq_redis_server() -> Iterator[str]:
    """URL of the session's Redis (not flushed; prefer ``fastq_redis_url``)."""
    server = start_test_redis()
    if server is None:
        yield os.environ[TEST_URL_ENV]
        return
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def fastq_redis_url(fastq_redis_server: str) -> str:
    """URL of a real Redis whose database is empty at the start of the test."""
    import redis

    client = redis.Redis.from_url(fastq_redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return fastq_redis_server


@pytest.fixture
def fastq_client(fastq_redis_url: str) -> Iterator[Any]:
    """A ``fastq.Client`` connected to ``fastq_redis_url``."""
    from fastq.client import Client

    client = Client(fastq_redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fastq_worker(fastq_redis_url: str) -> Callable[..., Any]:
    """Factory of in-process workers: ``fastq_worker(handler, **config).drain(queue, timeout)``."""
    from fastq.testing import WorkerHarness

    def make(handler: Any, **config: Any) -> WorkerHarness:
        redis_url = config.pop("redis_url", fastq_redis_url)
        return WorkerHarness(handler, redis_url, **config)

    return make
