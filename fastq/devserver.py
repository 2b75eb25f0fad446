"""A throwaway local Redis for demos and first runs - never for production.

``DevServer`` starts ``redis-server`` (when it is installed) on a free port in
a temporary directory with persistence off, and removes it on ``stop()``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

import redis

SEARCH_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server",
                "/opt/homebrew/bin/redis-server")

INSTALL_HINT = ("no redis-server found. Install one (Debian/Ubuntu: sudo apt-get install -y redis-server; "
                "macOS: brew install redis) or point FASTQ_REDIS_URL at a running Redis >= 6.2")


def find_redis_server() -> Optional[str]:
    found = shutil.which("redis-server")
    if found:
        return found
    return next((p for p in SEARCH_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class DevServer:
    """A private redis-server process; use as a context manager or call start()/stop()."""

    def __init__(self, binary: Optional[str] = None, port: Optional[int] = None) -> None:
        self.binary = binary or find_redis_server()
        if self.binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.port = port or free_port()
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "DevServer":
        self.dir = tempfile.mkdtemp(prefix="fastq-redis-")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}; see {self.dir}/redis.log")
            if reachable(self.url, 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "DevServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
