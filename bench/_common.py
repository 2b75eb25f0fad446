"""What the fastq-only benchmark scripts share (run them as ``python -m bench.<name>``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

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


def process_tree(roots: Iterable[Any]) -> list[Any]:
    """The processes started as ``roots`` (``subprocess.Popen``), with all their descendants, as
    ``psutil.Process``es; those gone already are left out."""
    import psutil

    out = []
    for p in roots:
        try:
            root = psutil.Process(p.pid)
            out.append(root)
            out.extend(root.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return out


def cpu_seconds(procs: Iterable[Any]) -> float:
    """User + system CPU seconds of ``procs`` (``psutil.Process``es); those gone are left out."""
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def redis_cpu_seconds(r: redis.Redis) -> float:
    """The Redis server's user + system CPU seconds (``INFO cpu``)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def app_supervisor(module_app: str, queue: str, processes: int, redis_url: Optional[str]) -> tuple[Any, Any, str]:
    """A private redis-server (unless ``redis_url``) and ``fastq-supervisor <module_app>`` serving
    ``queue`` on it, for the App benchmarks: ``(supervisor process, server or None, URL)``. Sets
    ``FASTQ_REDIS_URL`` so the benchmark's own App (``fastq.App()``) uses the same Redis. Stop
    both with ``stop_supervisor``."""
    from fastq.devserver import start_dev_server

    server = None
    url = redis_url
    if url is None:
        server = start_dev_server()
        url = server.url
    os.environ["FASTQ_REDIS_URL"] = url
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", module_app, "--redis-url", url,
           "--processes", str(processes), "--queues", queue, "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, cwd=root), server, url


def stop_supervisor(proc: Any, server: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    if server is not None:
        server.stop()
