"""Shared fixtures: a real redis-server per test session, and the codec implementations.

The session's redis-server runs on a free port in a temp dir (never the
developer's 6379), so tests may FLUSHALL freely. If ``redis-server`` is not
installed the tests fail with a clear message: fastq is never tested against
a fake Redis.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import RedisServer  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--no-c-extensions", action="store_true", default=False,
                     help="skip the tests of the compiled codec")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close the result watches (``TaskRef.result()``) before the interpreter's shutdown."""
    from fastq._rdb.settled import close_all

    close_all()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, flushed before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.script_flush()
    client.close()
    return redis_server.url


@pytest.fixture
def r(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _implementations():
    from fastq import _speedups_py

    impls = [pytest.param(_speedups_py, id="pure-python")]
    if not os.environ.get("FASTQ_NO_EXTENSIONS"):
        impls.insert(0, pytest.param("cython", id="cython", marks=pytest.mark.c_extension))
    return impls


@pytest.fixture(scope="session", params=_implementations())
def codec(request: pytest.FixtureRequest):
    """Each codec test runs against the compiled module and the pure-Python one."""
    if request.param == "cython":
        if request.config.getoption("--no-c-extensions"):
            pytest.skip("--no-c-extensions")
        from fastq import _speedups

        return _speedups
    return request.param


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Redis Cluster of 3 masters (tests/topology.py), one per test module that asks for it."""
    from topology import Cluster

    c = Cluster(tmp_path_factory.mktemp("cluster"), masters=3).start()
    yield c
    c.stop()


@pytest.fixture
def fresh(cluster):
    """``cluster``, healthy, flushed and with its error counters reset."""
    cluster.wait_ok()
    cluster.flushall()
    cluster.reset_error_stats()
    return cluster
