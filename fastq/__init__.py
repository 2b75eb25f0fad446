"""fastq: a fast Redis-backed task queue for Python, wire-compatible with Go Asynq.

Public API::

    fastq.App (tasks with a decorator: @app.task), fastq.Backoff, fastq.Retry, fastq.TaskRef
    fastq.chain, fastq.group, fastq.chord (workflows of task.s(...) signatures)
    fastq.Task, fastq.TaskInfo, fastq.TaskState
    fastq.Client, fastq.AsyncClient
    fastq.ServeMux, fastq.Worker, fastq.WorkerConfig
    fastq.get_task_id(), get_retry_count(), get_max_retry(), get_queue_name(), current_task()
    fastq.SkipRetry, fastq.RevokeTask and the errors in fastq.errors
"""
from typing import TYPE_CHECKING

from fastq._codec import USING_SPEEDUPS
from fastq.client import AsyncClient, Client
from fastq.context import (
    TaskContext,
    current_task,
    get_max_retry,
    get_parent_task_id,
    get_queue_name,
    get_retry_count,
    get_root_task_id,
    get_task_id,
    is_cancelled,
)
from fastq.errors import (
    CorruptDataError,
    DecodeError,
    DuplicateTaskError,
    FastqError,
    HandlerNotFoundError,
    InvalidOptionError,
    NoTaskContextError,
    PayloadError,
    QueueNotEmptyError,
    QueueNotFoundError,
    Retry,
    RevokeTask,
    SkipRetry,
    TaskArgumentError,
    TaskFailedError,
    TaskIDConflictError,
    TaskNotFoundError,
    TaskStateError,
)
from fastq.mux import ServeMux
from fastq.results import ResultWriter, result_writer
from fastq.server.config import WorkerConfig
from fastq.task import Task, TaskInfo, TaskState

# Loaded on first use (PEP 562): a worker process or a producer need none of these, and they pull
# in croniter, the Inspector and the server (faster `import fastq`, smaller worker RSS).
_LAZY = {
    "App": "fastq.app",
    "AppTask": "fastq.app",
    "Backoff": "fastq.app",
    "TaskRef": "fastq.app",
    "TaskWithOptions": "fastq.app",
    "Signature": "fastq.app.canvas",
    "chain": "fastq.app.canvas",
    "group": "fastq.app.canvas",
    "chord": "fastq.app.canvas",
    "AsyncInspector": "fastq.inspect",
    "DailyStats": "fastq.inspect",
    "GroupInfo": "fastq.inspect",
    "Inspector": "fastq.inspect",
    "QueueInfo": "fastq.inspect",
    "PeriodicTaskConfig": "fastq.scheduler",
    "PeriodicTaskManager": "fastq.scheduler",
    "Scheduler": "fastq.scheduler",
    "Worker": "fastq.server.worker",
    "TaskType": "fastq.typed",
    "make_task": "fastq.typed",
    "typed_task": "fastq.typed",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastq' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # for type checkers and IDEs
    from fastq.app import App, AppTask, Backoff, TaskRef, TaskWithOptions
    from fastq.app.canvas import Signature, chain, chord, group
    from fastq.inspect import AsyncInspector, DailyStats, GroupInfo, Inspector, QueueInfo
    from fastq.scheduler import PeriodicTaskConfig, PeriodicTaskManager, Scheduler
    from fastq.server.worker import Worker
    from fastq.typed import TaskType, make_task, typed_task

__version__ = "0.1.0"

__all__ = [
    "App",
    "Signature",
    "chain",
    "chord",
    "group",
    "AppTask",
    "Backoff",
    "Retry",
    "TaskArgumentError",
    "TaskFailedError",
    "TaskRef",
    "TaskWithOptions",
    "AsyncClient",
    "AsyncInspector",
    "CorruptDataError",
    "DailyStats",
    "GroupInfo",
    "Inspector",
    "QueueInfo",
    "QueueNotEmptyError",
    "QueueNotFoundError",
    "TaskNotFoundError",
    "TaskStateError",
    "Client",
    "DecodeError",
    "DuplicateTaskError",
    "FastqError",
    "HandlerNotFoundError",
    "InvalidOptionError",
    "NoTaskContextError",
    "PayloadError",
    "PeriodicTaskConfig",
    "PeriodicTaskManager",
    "RevokeTask",
    "Scheduler",
    "ResultWriter",
    "ServeMux",
    "SkipRetry",
    "Task",
    "TaskContext",
    "TaskIDConflictError",
    "TaskInfo",
    "TaskState",
    "TaskType",
    "USING_SPEEDUPS",
    "Worker",
    "WorkerConfig",
    "current_task",
    "get_max_retry",
    "get_parent_task_id",
    "get_queue_name",
    "get_retry_count",
    "get_root_task_id",
    "get_task_id",
    "result_writer",
    "is_cancelled",
    "make_task",
    "typed_task",
]
