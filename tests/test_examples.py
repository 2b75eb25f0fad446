"""The integration examples run: examples/fastapi (FastAPI's TestClient with a real in-process
worker on the session's Redis) and examples/django (its own tests, run by Django's test runner
in a subprocess, so Django's global settings never leak into this process).

fastapi, httpx and django are in the [dev] extra: a missing one fails these tests, never skips them.
"""
from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import wait_for

import fastq
from fastq import keys
from fastq.testing import DrainResult, WorkerHarness

ROOT = Path(__file__).resolve().parents[1]
FASTAPI_EXAMPLE = ROOT / "examples" / "fastapi"
DJANGO_EXAMPLE = ROOT / "examples" / "django"


# ------------------------------------------------------------------ FastAPI


@pytest.fixture
def example(redis_url, monkeypatch):
    """The FastAPI example's modules (``app`` and ``tasks``), imported fresh, on the session's Redis."""
    monkeypatch.setenv("FASTQ_REDIS_URL", redis_url)
    monkeypatch.syspath_prepend(str(FASTAPI_EXAMPLE))
    for name in ("app", "tasks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("app")
    yield module
    module.tasks.app.close()
    for name in ("app", "tasks"):
        sys.modules.pop(name, None)


@pytest.fixture
def client(example):
    with TestClient(example.api) as test_client:  # the lifespan closes the App's async client
        yield test_client


def drain_once_queued(app: fastq.App, redis_url: str, r, queue: str = "default") -> tuple[threading.Thread, list]:
    """In a thread: wait until a task is pending in ``queue`` (the request enqueued it), then drain."""
    results: list[DrainResult | BaseException] = []

    def run() -> None:
        try:
            deadline = time.monotonic() + 10
            while not r.llen(keys.pending_key(queue)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing was enqueued to {queue!r}")
                time.sleep(0.01)
            results.append(WorkerHarness(app, redis_url).drain(timeout=20))
        except BaseException as exc:  # reported by the test
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def joined(thread: threading.Thread, results: list) -> DrainResult:
    thread.join(30)
    assert not thread.is_alive() and len(results) == 1, results
    if isinstance(results[0], BaseException):
        raise results[0]
    return results[0]


def test_fastapi_enqueue_route_writes_a_task_that_a_worker_runs(example, client, redis_url, capsys):
    response = client.post("/mails", json={"to": "ada@example.com", "subject": "Welcome"})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert response.json()["queue"] == "emails"
    with fastq.Inspector(redis_url) as inspector:
        info = inspector.get_task_info("emails", task_id)
    assert info.type == "mail:send" and info.state is fastq.TaskState.PENDING
    assert info.payload == b'{"to":"ada@example.com","subject":"Welcome"}'

    result = WorkerHarness(example.tasks.app, redis_url).drain(timeout=20)
    assert result.succeeded == [task_id]
    assert "mail to ada@example.com: Welcome" in capsys.readouterr().out

    assert client.post("/mails", json={"to": "", "subject": "x"}).status_code == 422  # checked before enqueueing
    with fastq.Inspector(redis_url) as inspector:
        assert inspector.get_queue_info("emails").pending == 0


def test_fastapi_await_route_returns_the_workers_result(example, client, redis_url, r):
    worker = drain_once_queued(example.tasks.app, redis_url, r)
    response = client.post("/stats", json={"text": "the quick brown fox\njumps"}, params={"wait": 20})
    drained = joined(*worker)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"task_id": body["task_id"], "words": 5, "lines": 2, "longest_word": "quick"}
    assert drained.succeeded == [body["task_id"]]


def test_fastapi_failed_task_answers_500_with_the_tasks_error(example, client, redis_url, r):
    worker = drain_once_queued(example.tasks.app, redis_url, r)
    response = client.post("/stats", json={"text": "  \n "}, params={"wait": 20})
    drained = joined(*worker)
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["detail"] == "the task failed" and "the text has no words" in body["error"]
    assert drained.archived == [body["task_id"]] and drained.handler_calls == 1  # retry_on=OSError: not retried
    lookup = client.get(f"/stats/{body['task_id']}")
    assert lookup.status_code == 500 and "the text has no words" in lookup.json()["error"]


def test_fastapi_timeout_answers_504_and_the_result_can_be_read_later(example, client, redis_url):
    started = time.monotonic()
    response = client.post("/stats", json={"text": "no worker is running"}, params={"wait": 0.3})
    assert response.status_code == 504, response.text
    assert 0.3 <= time.monotonic() - started < 10
    task_id = response.json()["task_id"]
    assert client.get(f"/stats/{task_id}").status_code == 202  # still pending

    assert WorkerHarness(example.tasks.app, redis_url).drain(timeout=20).succeeded == [task_id]
    lookup = client.get(f"/stats/{task_id}")
    assert lookup.status_code == 200
    assert lookup.json() == {"task_id": task_id, "words": 4, "lines": 1, "longest_word": "running"}
    assert client.get("/stats/no-such-id").status_code == 404


def test_fastapi_slow_task_times_out_while_a_worker_runs_it(example, client, redis_url, r):
    worker = drain_once_queued(example.tasks.app, redis_url, r)
    response = client.post("/stats", json={"text": "slow"}, params={"wait": 0.2, "delay": 1.0})
    assert response.status_code == 504, response.text
    assert joined(*worker).succeeded == [response.json()["task_id"]]  # it still ran to the end


# ------------------------------------------------------------------ Django


def django_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    env.update(FASTQ_REDIS_URL=redis_url, DJANGO_DB_PATH=str(tmp_path / "db.sqlite3"),
               DJANGO_SETTINGS_MODULE="mysite.settings", PYTHONPATH=str(DJANGO_EXAMPLE))
    return env


def test_django_example_enqueues_on_commit_only(redis_url, tmp_path):
    """examples/django's own tests (accounts/tests.py), run as its README says: a committed join
    writes the welcome tasks to Redis and a worker runs them; a rolled-back one writes nothing."""
    proc = subprocess.run([sys.executable, "-W", "error", "manage.py", "test", "accounts", "-v", "2"],
                          cwd=DJANGO_EXAMPLE, env=django_env(redis_url, tmp_path), capture_output=True, text=True,
                          timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Ran 3 tests" in output and "\nOK" in output and "skipped" not in output, output
    assert f"('{tmp_path / 'test_db.sqlite3'}')" in output  # SQLite in a file of tmp_path, not the example's
    with fastq.Inspector(redis_url) as inspector:  # the tasks ran on this Redis: 2 + 1 welcomes, kept with results
        done = inspector.list_tasks("emails", "completed")
    assert sorted(t.result for t in done) == [b'"ada@example.com"', b'"grace@example.com"', b'"kept@example.com"']


@pytest.mark.slow
def test_django_example_runs_under_fastq_supervisor_as_its_readme_says(redis_url, tmp_path, r):
    """migrate, fastq-supervisor mysite.fastq_app:app from the example's directory (no
    DJANGO_SETTINGS_MODULE given: the App's module sets Django up), then joins through the view."""
    env = django_env(redis_url, tmp_path)
    run = partial(subprocess.run, cwd=DJANGO_EXAMPLE, env=env, capture_output=True, text=True, timeout=60)
    migrated = run([sys.executable, "manage.py", "migrate", "-v", "0"])
    assert migrated.returncode == 0, migrated.stderr

    worker_env = {k: v for k, v in env.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    supervisor = subprocess.Popen([str(Path(sys.executable).with_name("fastq-supervisor")), "mysite.fastq_app:app",
                                   "--queues", "emails=1", "--processes", "1"], cwd=DJANGO_EXAMPLE, env=worker_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def join(*emails: str) -> subprocess.CompletedProcess[str]:
            code = ("from django.test import Client; "
                    f"r = Client().post('/members/', {{'emails': {list(emails)!r}}}, content_type='application/json'); "
                    "print(r.status_code, r.content.decode())")
            return run([sys.executable, "manage.py", "shell", "-c", code])

        joined_ok = join("ada@example.com", "grace@example.com")
        assert joined_ok.stdout.splitlines()[-1:] == ['201 {"members": [1, 2]}'], joined_ok.stdout + joined_ok.stderr
        refused = join("linus@example.com", "ada@example.com")
        assert refused.stdout.splitlines()[-1].startswith("409 "), refused.stdout + refused.stderr

        def welcomed() -> list[str]:
            with closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
                return [row[0] for row in db.execute(
                    "SELECT email FROM accounts_member WHERE welcomed_at IS NOT NULL ORDER BY email")]

        assert wait_for(lambda: len(welcomed()) == 2, timeout=30, what="two welcomed members") is True
        assert welcomed() == ["ada@example.com", "grace@example.com"]
    finally:
        supervisor.terminate()
        out, err = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0, err
    assert "To: ada@example.com" in out and "To: grace@example.com" in out and "linus" not in out, out
    assert int(r.get(keys.processed_total_key("emails"))) == 2 and not r.llen(keys.pending_key("emails"))
