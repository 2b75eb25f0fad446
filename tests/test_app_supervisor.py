"""``fastq-supervisor module:app`` serves a fastq.App with the App's settings: its tasks' queues
(unless --queues is given), its Redis URL (unless --redis-url is given), its retry policies, and
lists the registered task names at start-up. Real supervisor processes on the session's Redis."""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fastq import keys

APP = textwrap.dedent('''
    import os
    import fastq

    app = fastq.App(os.environ["APP_REDIS_URL"], error_handler=lambda ctx, task, exc: None)

    @app.task(name="email:send", queue="emails")
    async def send(to: str) -> str:
        return "sent to " + to

    @app.task(name="report:build", queue="reports",
              retry_backoff=fastq.Backoff(base=700, factor=1, max=700, jitter=0))
    def build(n: int) -> int:
        raise IOError("printer on fire")
''')


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "my_app.py").write_text(APP)
    return tmp_path


def start(app_dir, redis_url, *args: str) -> subprocess.Popen[str]:
    env = {"APP_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(app_dir)}
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", "my_app:app", "--processes", "1", *args]
    return subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return err


def _load(app_dir, redis_url):
    sys.path.insert(0, str(app_dir))
    try:
        os.environ["APP_REDIS_URL"] = redis_url
        sys.modules.pop("my_app", None)
        return importlib.import_module("my_app")
    finally:
        sys.path.remove(str(app_dir))


def test_the_supervisor_serves_the_apps_queues_url_and_retry_policies(app_dir, redis_url, r):
    mod = _load(app_dir, redis_url)
    proc = start(app_dir, redis_url)  # no --queues, no --redis-url: the App's
    try:
        ref = mod.send.enqueue("a@b.c")
        assert ref.queue == "emails"
        assert ref.result(timeout=20) == "sent to a@b.c"
        failing = mod.build.enqueue(3)
        deadline = time.monotonic() + 20
        while r.zscore(keys.retry_key("reports"), failing.id) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        score = r.zscore(keys.retry_key("reports"), failing.id)
        assert score is not None, "the failing task was not retried"
        assert 690 <= score - time.time() <= 701  # the task's Backoff (700 s), not Asynq's 15-44 s
    finally:
        err = stop(proc)
        mod.app.close()
    assert "serving App my_app:app: 2 task(s) on queues default, emails, reports: email:send, report:build" in err


def test_given_queues_win_over_the_apps(app_dir, redis_url, r):
    mod = _load(app_dir, redis_url)
    proc = start(app_dir, redis_url, "--queues", "reports")
    try:
        ref = mod.send.enqueue("x@y.z")
        with pytest.raises(TimeoutError):
            ref.result(timeout=2)  # "emails" is not served
        assert r.llen(keys.pending_key("emails")) == 1
    finally:
        err = stop(proc)
        mod.app.close()
    assert "on queues reports:" in err
