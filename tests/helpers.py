"""Test helpers: a private redis-server, key dumps, golden data, worker runners."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import redis

# Golden data produced by real Go Asynq v0.26.0, kept in tests/golden (FASTQ_GOLDEN_DIR: another copy).
GOLDEN = Path(os.environ.get("FASTQ_GOLDEN_DIR", Path(__file__).resolve().parent / "golden"))
LOCAL_GOLDEN = Path(__file__).resolve().parent / "golden"


def golden(name: str) -> dict:
    """Load a golden file of Go Asynq v0.26.0 data (tests/golden keeps a copy)."""
    for base in (GOLDEN, LOCAL_GOLDEN):
        path = base / name
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process of our own on a free port in ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None, extra: list[str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; fastq's tests need a real Redis "
                               "(apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
            try:
                probe.ping()
                return
            except redis.AuthenticationError:  # started with --requirepass: it is up
                return
            except redis.ConnectionError:
                time.sleep(0.02)
            finally:
                probe.close()
        self.stop()  # do not leave a half-started server behind
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def dump(r: redis.Redis, pattern: str = "*") -> dict[str, dict]:
    """Every key matching ``pattern`` with its type, TTL flag and contents (str/bytes as stored)."""
    out = {}
    for raw in sorted(r.keys(pattern)):
        key = raw.decode()
        kind = r.type(raw).decode()
        entry: dict[str, Any] = {"type": kind, "ttl": r.pttl(raw) > 0}
        if kind == "string":
            entry["value"] = r.get(raw)
        elif kind == "list":
            entry["items"] = [x.decode() for x in r.lrange(raw, 0, -1)]
        elif kind == "set":
            entry["members"] = sorted(x.decode() for x in r.smembers(raw))
        elif kind == "zset":
            entry["members"] = {m.decode(): s for m, s in r.zrange(raw, 0, -1, withscores=True)}
        elif kind == "hash":
            entry["fields"] = {k.decode(): v for k, v in r.hgetall(raw).items()}
        out[key] = entry
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def async_wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RunningWorker:
    """Runs a fastq Worker in-process on the test's event loop."""

    def __init__(self, handler: Any, redis_url: str, **config: Any) -> None:
        from fastq import Worker, WorkerConfig

        config.setdefault("heartbeat_interval", 0.5)
        config.setdefault("forward_interval", 0.1)
        config.setdefault("recover_interval", 0.2)
        config.setdefault("poll_interval", 0.01)
        self.worker = Worker(handler, WorkerConfig(redis_url=redis_url, **config))
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "RunningWorker":
        self.task = asyncio.create_task(self.worker.run())
        await async_wait_for(lambda: self.worker.started is not None and self.worker.started.is_set(),
                             what="worker start")
        return self

    async def stop(self, immediate: bool = False) -> None:
        if self.task is not None and not self.task.done():
            self.worker.stop(immediate)
            await asyncio.wait_for(self.task, 30)

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


# ---------------------------------------------------------------- golden Redis states

def _is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


def _key_regex(pattern: str) -> "re.Pattern[str]":
    import re

    parts = re.split(r"(<[^>]*>)", pattern)
    return re.compile("^" + "".join(".+?" if _is_placeholder(p) else re.escape(p) for p in parts) + "$")


def _check_value(expected: Any, actual: Any, where: str) -> None:
    if isinstance(expected, str) and isinstance(actual, (int, float)):
        literal = re.match(r"^(-?\d+) \(literal", expected)  # e.g. "2000000000 (literal: = ProcessAt)"
        if literal:
            expected = int(literal.group(1))
    if _is_placeholder(expected):
        assert actual not in (None, "", 0, b""), f"{where}: expected a run-dependent value, got {actual!r}"
        return
    assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"


def _check_decoded(expected: dict, actual: dict, where: str) -> None:
    for name, value in expected.items():
        if name == "payload_hex":
            _check_value(value, actual["payload"].hex(), f"{where}.payload")
        elif name == "task_payload_hex":
            _check_value(value, actual["task_payload"].hex(), f"{where}.task_payload")
        elif isinstance(value, dict) and not _is_placeholder(value) and name not in ("headers", "queues"):
            raise AssertionError(f"unexpected nested field {name}")
        else:
            _check_value(value, actual[name], f"{where}.{name}")


def assert_golden_state(r: redis.Redis, name: str, ignore: tuple[str, ...] = (),
                        extra_fields: tuple[str, ...] = ()) -> None:
    """Compare every key in Redis with Go Asynq's state ``name`` from redis_states.json.

    ``extra_fields``: task-hash fields fastq adds on purpose (Go readers ignore them).
    """
    from dataclasses import asdict

    from fastq._codec import decode_message
    from fastq._proto import ServerInfo, WorkerInfo, decode

    state = next(s for s in golden("redis_states.json")["states"] if s["name"] == name)
    actual = dump(r)
    seen = set()
    for exp in state["keys"]:
        if exp["key"] in ignore:
            continue
        regex = _key_regex(exp["key"])
        matches = [k for k in actual if regex.match(k)]
        assert len(matches) == 1, f"{name}: key {exp['key']!r} matched {matches} in {sorted(actual)}"
        key = matches[0]
        seen.add(key)
        got = actual[key]
        where = f"{name}:{key}"
        assert got["type"] == exp["type"], f"{where}: type {got['type']} != {exp['type']}"
        assert got["ttl"] == (exp["ttl"] == "positive"), f"{where}: ttl presence differs ({exp['ttl']})"
        if exp["type"] == "list":
            assert got["items"] == exp["items"], where
        elif exp["type"] == "set":
            assert got["members"] == sorted(exp["members"]), where
        elif exp["type"] == "zset":
            assert len(got["members"]) == len(exp["members"]), where
            for m in exp["members"]:
                member_re = _key_regex(m["member"])
                hits = [(k, v) for k, v in got["members"].items() if member_re.match(k)]
                assert len(hits) == 1, f"{where}: member {m['member']} not found in {got['members']}"
                score = hits[0][1]
                assert score == int(score), f"{where}: score {score} is not whole seconds"
                _check_value(m["score"], score, f"{where} score")
        elif exp["type"] == "string":
            value = exp["value"]
            if isinstance(value, dict):  # a ServerInfo protobuf
                info = asdict(decode(ServerInfo, got["value"]))
                _check_decoded(value["decoded"], info, where)
            else:
                _check_value(value, got["value"].decode(), where)
        elif exp["type"] == "hash":
            assert set(got["fields"]) - set(extra_fields) == set(exp["fields"]), \
                f"{where}: fields {sorted(got['fields'])} != {sorted(exp['fields'])}"
            for fname, fval in exp["fields"].items():
                raw = got["fields"][fname]
                if fname == "msg":
                    msg = decode_message(raw)
                    _check_decoded(fval["decoded"], {n: getattr(msg, n) for n in (
                        "type", "payload", "id", "queue", "retry", "retried", "error_msg", "timeout", "deadline",
                        "unique_key", "last_failed_at", "retention", "completed_at", "group_key", "headers")},
                        f"{where}.msg")
                    if fval.get("hex"):
                        assert raw.hex() == fval["hex"], f"{where}.msg bytes differ"
                elif isinstance(fval, dict):  # a WorkerInfo protobuf
                    _check_decoded(fval["decoded"], asdict(decode(WorkerInfo, raw)), f"{where}.{fname}")
                else:
                    _check_value(fval, raw.decode(), f"{where}.{fname}")
    extra = set(actual) - seen - {k for k in actual if any(_key_regex(i).match(k) for i in ignore)}
    assert not extra, f"{name}: keys Go Asynq does not write: {sorted(extra)}"


def chord_app(redis_url: str):
    """An App with ``part(i) -> i`` and ``join(xs) -> sum(xs)``, for chord tests (close it)."""
    import fastq

    app = fastq.App(redis_url)

    @app.task
    def part(i: int) -> int:
        return i

    @app.task
    def join(xs: list[int]) -> int:
        return sum(xs)

    return app, part, join


@contextlib.contextmanager
def task_log_records(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logged at INFO and above on logger ``name`` while the block runs, each passed
    through fastq's TaskContextFilter (``record.task_id`` etc. as a handler's log line gets them)."""
    from fastq.logging import TaskContextFilter

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    collector = Collect()
    collector.addFilter(TaskContextFilter())
    logger = logging.getLogger(name)
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(collector)
