"""Tests of tasks.py: unit tests with run_handler (no Redis), and an end-to-end test with the
fixtures of fastq's pytest plugin (a real private redis-server, an in-process worker)."""
import pytest
from tasks import Signup, SignupTask, mux

import fastq
from fastq.testing import run_handler


def test_welcome_names_its_parent_task():
    task = fastq.Task("email:welcome", b"ada@example.com")
    result = run_handler(mux, task, headers={"fastq-parent-id": "signup-1"})
    assert result == "welcome ada@example.com (because of task signup-1)"


def test_a_bad_address_is_archived_not_retried():
    with pytest.raises(fastq.SkipRetry, match="cannot mail 'nobody'"):
        run_handler(mux, SignupTask(Signup("nobody", 7)))


def test_a_malformed_payload_names_the_field():
    with pytest.raises(fastq.SkipRetry, match="field 'user_id': missing"):
        run_handler(mux, fastq.Task("user:signup", b'{"email": "ada@example.com"}'))


def test_signup_end_to_end(fastq_redis_url, fastq_client, fastq_worker, monkeypatch):
    monkeypatch.setenv("FASTQ_REDIS_URL", fastq_redis_url)  # the handler's own Client uses it
    ok = fastq_client.enqueue(SignupTask(Signup("ada@example.com", 1)))
    bad = fastq_client.enqueue(SignupTask(Signup("nobody", 2)))

    result = fastq_worker(mux).drain(timeout=10)

    assert result.archived == [bad.id]
    assert result.stored_errors[bad.id] == "cannot mail 'nobody': skip retry for the task"
    welcome = [run for run in result.runs if run.type == "email:welcome"]
    assert [run.result for run in welcome] == [f"welcome ada@example.com (because of task {ok.id})"]
    assert set(result.succeeded) == {ok.id, welcome[0].id}
