"""Test helpers for code that uses fastq.

Unit tests, no Redis:

* ``run_handler(handler, task, ...)`` runs a handler (``def``, ``async def``
  or a ``ServeMux``) in-process with the task context a worker would give it,
  and returns its result or raises its exception.
* ``await arun_handler(...)`` does the same inside a running event loop.
* ``with task_context(...)`` sets the context for code that calls
  ``fastq.get_task_id()`` and friends deep inside.
* ``MemoryResults`` keeps what ``fastq.result_writer()`` writes in those runs.
* ``with app.eager():`` (a ``fastq.App``) runs App tasks at ``enqueue()``, in-process.

Integration tests, real Redis:

* ``WorkerHarness(handler, redis_url).drain()`` runs a fastq ``Worker``
  in-process until the queues have nothing left to do now and returns a
  ``DrainResult``. The pytest plugin's ``fastq_worker`` fixture builds these.

The package's modules: ``handlers`` (the unit-test helpers) and ``harness`` (the worker harness).
"""
from __future__ import annotations

from fastq.testing.handlers import DEADLINE_EXCEEDED as DEADLINE_EXCEEDED
from fastq.testing.handlers import Deadline as Deadline
from fastq.testing.handlers import MemoryResults, arun_handler, run_handler, task_context
from fastq.testing.harness import HARNESS_DEFAULTS as HARNESS_DEFAULTS
from fastq.testing.harness import DrainResult, DrainTimeoutError, TaskRun, WorkerHarness

__all__ = [
    "run_handler",
    "arun_handler",
    "task_context",
    "WorkerHarness",
    "DrainResult",
    "TaskRun",
    "DrainTimeoutError",
    "MemoryResults",
]
