"""What a worker process imports: none of the integrations, the dashboard, the Inspector or the scheduler.

A worker child of ``fastq-supervisor`` holds what its parent imported before the fork (the
command line, the server, the APP, ``fastq.server.worker``) plus whatever it imports while it
runs. Each test runs a fresh interpreter through that path — a real worker that takes one task
from the session's Redis and stops — and lists the heavy modules in ``sys.modules``. Modules
that ``import redis.asyncio`` alone already loads are not counted: redis-py 8 imports the
OpenTelemetry SDK when it is installed, which fastq cannot prevent. Memory figures are
``bench/memory.py``'s, not asserted here.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# top-level packages and fastq modules a worker has no use for (unless its APP imports them)
HEAVY = ("starlette", "jinja2", "uvicorn", "prometheus_client", "opentelemetry", "rich", "pydantic", "croniter",
         "zoneinfo", "fastapi", "django", "fastq.dashboard", "fastq.inspect", "fastq.scheduler", "fastq.contrib",
         "fastq.doctor", "fastq.devserver", "fastq.cli._base", "fastq.cli._dashboard", "fastq.testing")

_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    import redis.asyncio
    before_fastq = set(sys.modules)
    # what the supervisor imports before it forks
    import fastq.cli.supervisor, fastq.logging
    from fastq.server.supervisor import _preload, import_app
    from fastq.server.config import WorkerConfig
    redis_url, queue, kind = sys.argv[1:4]
    import fastq
    if kind == "app":
        app = fastq.App(redis_url=redis_url)

        @app.task(name="imports:echo", queue=queue)
        def echo(n: int, tags: list[str]) -> int:
            os.kill(os.getpid(), signal.SIGTERM)
            return n

        echo.enqueue(1, ["a"])
        handler, config = app.mux, app.worker_config(queues={queue: 1})
    else:
        handler = fastq.ServeMux()

        @handler.handle("imports:noop")
        def noop(task):
            os.kill(os.getpid(), signal.SIGTERM)

        fastq.Client(redis_url).enqueue(fastq.Task("imports:noop"), queue=queue)
        config = WorkerConfig(redis_url=redis_url, queues={queue: 1})
    _preload()
    # what the child does after the fork: run a worker until its one task stopped it
    from fastq.server.worker import run_worker
    assert run_worker(handler, config) == 0
    print(json.dumps(sorted(set(sys.modules) - before_fastq)))
""")


def _worker_modules(redis_url: str, kind: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _WORKER, redis_url, f"imports-{kind}", kind],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)
            and not any(m == a or m.startswith(a + ".") for a in allowed)]


@pytest.mark.parametrize("kind", ["mux", "app"])
def test_a_worker_imports_no_heavy_module(redis_url, kind):
    modules = _worker_modules(redis_url, kind)
    assert "fastq.server.processor" in modules  # the worker did run
    assert _heavy(modules) == []
    if kind == "mux":  # a ServeMux worker has no use for the App layer nor its payload codec
        assert [m for m in modules if m.startswith(("fastq.app", "fastq.typed"))] == []


def test_import_fastq_is_lean():
    """A producer's ``import fastq``: no server, no App layer, nothing heavy."""
    code = ("import json, sys, redis.asyncio; before = set(sys.modules); import fastq; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout)
    assert _heavy(modules) == []
    assert [m for m in modules if m.startswith(("fastq.app", "fastq.typed", "fastq.server.worker",
                                                "fastq.server.processor", "click"))] == []
