"""Per-task context: what a running handler can ask about the task it runs.

The worker sets one ``contextvars.ContextVar`` per task at dispatch, inside the
asyncio task (or the copied context a sync handler's thread runs in), so
concurrent handlers never see each other's values.

Outside a handler, ``get_task_id()``, ``get_retry_count()``, ``get_max_retry()``
and ``get_queue_name()`` raise ``fastq.NoTaskContextError`` (a ``LookupError``):
a silent ``None`` would end up in logs and database rows and hide the bug.
``current_task()`` is the non-raising form: it returns ``None`` there.
"""
from __future__ import annotations

import contextvars
from typing import Optional

from fastq.errors import NoTaskContextError

__all__ = [
    "TaskContext",
    "current_task",
    "get_task_id",
    "get_retry_count",
    "get_max_retry",
    "get_queue_name",
    "is_cancelled",
    "get_parent_task_id",
    "get_root_task_id",
    "PARENT_ID_HEADER",
    "ROOT_ID_HEADER",
]

# Task lineage: a task enqueued while a handler runs records which task enqueued it
# (and the first task of that chain) in Asynq's header map; Go servers carry unknown
# headers along untouched. Written by fastq.options.plan_enqueue.
PARENT_ID_HEADER = "fastq-parent-id"
ROOT_ID_HEADER = "fastq-root-id"


class TaskContext:
    """Metadata of the running task.

    ``deadline`` is a ``time.time()`` value (0 = none); ``headers`` is the task's
    Asynq header map (read-only by convention).
    """

    __slots__ = ("task_id", "retry_count", "max_retry", "queue", "type", "deadline", "headers", "cancelled",
                 "results")

    def __init__(self, task_id: str, retry_count: int, max_retry: int, queue: str, type: str = "",
                 deadline: float = 0.0, headers: Optional[dict[str, str]] = None) -> None:
        self.task_id = task_id
        self.retry_count = retry_count
        self.max_retry = max_retry
        self.queue = queue
        self.type = type
        self.deadline = deadline
        self.headers = headers if headers is not None else {}
        # Set by the worker when the task is stopped (deadline, cancel request, shutdown, lost
        # lease). Async handlers also get CancelledError; sync handlers should poll is_cancelled().
        self.cancelled = False
        self.results = None  # the worker's result store (fastq.result_writer() writes through it)

    def __repr__(self) -> str:
        return (f"TaskContext(task_id={self.task_id!r}, queue={self.queue!r}, type={self.type!r}, "
                f"retry_count={self.retry_count}, max_retry={self.max_retry})")


_current: contextvars.ContextVar[Optional[TaskContext]] = contextvars.ContextVar("fastq_task", default=None)

# The worker sets the variable through this bound method (one attribute lookup saved per task).
set_current = _current.set
reset_current = _current.reset


def current_task() -> Optional[TaskContext]:
    """The running task's metadata, or ``None`` outside a handler."""
    return _current.get()


def _require(what: str) -> TaskContext:
    ctx = _current.get()
    if ctx is None:
        raise NoTaskContextError(f"fastq.{what}() called outside a task handler")
    return ctx


def is_cancelled() -> bool:
    """True once the running task was told to stop (deadline passed, cancelled through
    ``asynq:cancel``, worker shutting down, or lease lost).

    A sync handler cannot be interrupted from outside its thread: the worker settles the task
    at the limit and ignores whatever the thread does afterwards. Long sync handlers should
    check this between steps and return, and pass ``current_task().deadline`` (a
    ``time.time()`` value) as a timeout to blocking calls. Raises ``NoTaskContextError``
    outside a handler.
    """
    return _require("is_cancelled").cancelled


def get_task_id() -> str:
    """ID of the task the calling handler runs (Asynq's ``GetTaskID``)."""
    return _require("get_task_id").task_id


def get_retry_count() -> int:
    """How many times this task was retried before this run (Asynq's ``GetRetryCount``)."""
    return _require("get_retry_count").retry_count


def get_max_retry() -> int:
    """The task's maximum retry count (Asynq's ``GetMaxRetry``)."""
    return _require("get_max_retry").max_retry


def get_queue_name() -> str:
    """Name of the queue the task came from (Asynq's ``GetQueueName``)."""
    return _require("get_queue_name").queue


def get_parent_task_id() -> Optional[str]:
    """ID of the task whose handler enqueued the running task, or ``None`` when no handler did."""
    return _require("get_parent_task_id").headers.get(PARENT_ID_HEADER) or None


def get_root_task_id() -> Optional[str]:
    """ID of the first task in the running task's chain of parents, or ``None`` when it has no parent."""
    return _require("get_root_task_id").headers.get(ROOT_ID_HEADER) or None
