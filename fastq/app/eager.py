"""Eager mode (``with app.eager():``): an enqueued App task runs at once, in-process, for tests.

The call takes the path a worker's would, without Redis: the arguments become the JSON payload
(checked), the enqueue options are checked and the message planned (ID, queue, lineage
headers), then ``fastq.testing.run_handler`` runs the App's mux on it (payload decoding,
middleware, task context) and the result bytes are read back as the return value.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Iterator, Optional

from fastq.app.payload import ArchivedError, JSONResult
from fastq.app.ref import TaskRef
from fastq.options import plan_enqueue
from fastq.task import Task, TaskInfo, TaskState
from fastq.testing import arun_handler, run_handler

if TYPE_CHECKING:
    from fastq.app.task import AppTask

__all__ = ["eager_mode", "run_eager", "arun_eager"]


@contextlib.contextmanager
def eager_mode(flag: ContextVar[bool]) -> Iterator[None]:
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def _prepared(task: Task, options: dict[str, Any]) -> tuple[Task, dict[str, Any], TaskInfo]:
    msg = plan_enqueue(task, options).msg
    deadline: Optional[Any] = None
    if msg.deadline:
        deadline = float(msg.deadline)
    if msg.timeout:
        deadline = timedelta(seconds=msg.timeout)
    kwargs = {"task_id": msg.id, "max_retry": msg.retry, "queue": msg.queue, "headers": msg.headers,
              "deadline": deadline}
    return task, kwargs, TaskInfo.from_message(msg, TaskState.COMPLETED)


def _value(app_task: AppTask[Any, Any], info: TaskInfo, result: Any) -> TaskRef:
    if isinstance(result, JSONResult):
        info.result = bytes(result)
        return TaskRef(info, app_task.signature.load_result(bytes(result)))
    if isinstance(result, (bytes, bytearray, memoryview)):
        info.result = bytes(result)
        return TaskRef(info, info.result)
    return TaskRef(info, result)  # None, or what a middleware made of it


def run_eager(app_task: AppTask[Any, Any], task: Task, options: dict[str, Any]) -> TaskRef:
    """Run ``task`` now through the App's mux; its exception (the original one, not the
    ``SkipRetry`` that archives it in a worker) propagates."""
    task, kwargs, info = _prepared(task, options)
    try:
        result = run_handler(app_task.app.mux, task, **kwargs)
    except ArchivedError as exc:
        if exc.__cause__ is not None and not isinstance(exc.__cause__, ArchivedError):
            raise exc.__cause__ from None
        raise
    return _value(app_task, info, result)


async def arun_eager(app_task: AppTask[Any, Any], task: Task, options: dict[str, Any]) -> TaskRef:
    """``run_eager`` inside a running event loop (async tasks run on it, sync ones in a thread)."""
    task, kwargs, info = _prepared(task, options)
    try:
        result = await arun_handler(app_task.app.mux, task, **kwargs)
    except ArchivedError as exc:
        if exc.__cause__ is not None and not isinstance(exc.__cause__, ArchivedError):
            raise exc.__cause__ from None
        raise
    return _value(app_task, info, result)
