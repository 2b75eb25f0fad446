"""Enqueue options: Asynq's options in snake case, validated into a TaskMessage.

``plan_enqueue`` turns ``(task, **options)`` into an ``EnqueuePlan`` that both
``Client`` and ``AsyncClient`` execute; no I/O happens here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastq import _validate, keys
from fastq._codec import TaskMessage, new_task_ids
from fastq.context import PARENT_ID_HEADER, ROOT_ID_HEADER, current_task
from fastq.errors import InvalidOptionError
from fastq.task import Task

DEFAULT_QUEUE = "default"
DEFAULT_MAX_RETRY = 25
DEFAULT_TIMEOUT = 1800  # seconds, Asynq's default when neither timeout nor deadline is set

OPTION_NAMES = frozenset(
    {"queue", "task_id", "max_retry", "timeout", "deadline", "process_at", "process_in", "unique", "retention", "group"}
)

# How the task is written to Redis.
ENQUEUE, SCHEDULE, GROUP = "enqueue", "schedule", "group"


@dataclass(slots=True)
class EnqueuePlan:
    msg: TaskMessage
    kind: str  # ENQUEUE, SCHEDULE or GROUP
    process_at: int = 0  # unix seconds, for SCHEDULE (by the client clock)
    unique_ttl: int = 0  # seconds the uniqueness lock lives; 0 = not unique
    process_in: float | None = None  # when given as a delay: measured from Redis time at write


def check_option_names(options: dict[str, Any]) -> None:
    unknown = set(options) - OPTION_NAMES
    if unknown:
        name = sorted(unknown)[0]
        raise TypeError(f"unknown enqueue option {name!r}; valid options: {', '.join(sorted(OPTION_NAMES))}")


def _headers_with_lineage(task: Task) -> dict[str, str] | None:
    """The task's headers, plus its lineage when it is enqueued from inside a handler.

    The parent is the running task; the root is the parent's root, or the parent
    itself when it has none. Headers the caller set explicitly win.
    """
    parent = current_task()
    if parent is None:
        return dict(task.headers) if task.headers else None
    headers = {
        PARENT_ID_HEADER: parent.task_id,
        ROOT_ID_HEADER: parent.headers.get(ROOT_ID_HEADER) or parent.task_id,
    }
    headers.update(task.headers)
    return headers


def plan_enqueue(task: Task, options: dict[str, Any], now: float | None = None) -> EnqueuePlan:
    """Validate ``options`` for ``task`` and build the message Go Asynq's client would write."""
    if not isinstance(task, Task):
        raise TypeError(f"enqueue() needs a fastq.Task, not {type(task).__name__}")
    check_option_names(options)
    now = time.time() if now is None else now
    get = options.get

    _validate.task_type(task.type)  # checked by Task(), again here in case it was changed since
    queue = _validate.queue_name(get("queue", DEFAULT_QUEUE))
    task_id = get("task_id")
    task_id = new_task_ids(1)[0] if task_id is None else _validate.text("task_id", task_id)

    max_retry = get("max_retry", DEFAULT_MAX_RETRY)
    if not isinstance(max_retry, int) or isinstance(max_retry, bool):
        raise InvalidOptionError(f"option 'max_retry' must be an int, not {type(max_retry).__name__}")
    if not 0 <= max_retry <= 2**31 - 1:
        raise InvalidOptionError(f"option 'max_retry' must be between 0 and 2147483647, got {max_retry}")

    timeout = _validate.whole_seconds("timeout", get("timeout", 0))
    deadline = _validate.unix("deadline", get("deadline")) if get("deadline") is not None else 0
    if deadline < 0:
        raise InvalidOptionError("option 'deadline' is before 1970")
    if timeout == 0 and deadline == 0:
        timeout = DEFAULT_TIMEOUT
    retention = _validate.whole_seconds("retention", get("retention", 0))

    if get("process_at") is not None and get("process_in") is not None:
        raise InvalidOptionError("give either 'process_at' or 'process_in', not both")
    process_at = 0
    process_in = None
    if get("process_at") is not None:
        process_at = _validate.unix("process_at", get("process_at"))
    elif get("process_in") is not None:
        process_in = _validate.seconds("process_in", get("process_in"))
        process_at = int(now + process_in)

    group = get("group")
    group = "" if group is None else _validate.text("group", group)

    unique_ttl = 0
    unique_key = ""
    if get("unique") is not None:
        ttl = _validate.seconds("unique", get("unique"))
        if ttl < 1:
            raise InvalidOptionError(f"option 'unique' TTL must be at least 1 second, got {get('unique')!r}")
        unique_key = keys.unique_key(queue, task.type, task.payload)
        unique_ttl = int(ttl)

    msg = TaskMessage(
        type=task.type,
        payload=task.payload,
        id=task_id,
        queue=queue,
        retry=max_retry,
        timeout=timeout,
        deadline=deadline,
        unique_key=unique_key,
        retention=retention,
        group_key=group,
        headers=_headers_with_lineage(task),
    )
    if process_at > now:
        if unique_ttl:  # the lock lasts until the unique TTL after the run time, as in Go
            unique_ttl = max(1, int(process_at + unique_ttl - now))
        return EnqueuePlan(msg, SCHEDULE, process_at, process_in=process_in, unique_ttl=unique_ttl)
    if group:
        return EnqueuePlan(msg, GROUP, unique_ttl=unique_ttl)
    return EnqueuePlan(msg, ENQUEUE, unique_ttl=unique_ttl)


def plan_many(tasks: list[Task], options: dict[str, Any], now: float | None = None) -> list[EnqueuePlan]:
    """``plan_enqueue`` for many tasks sharing ``options``: the options are validated once
    (with the first task) and every other task only gets its own ID, type, payload, headers
    and unique key - the per-task cost of ``enqueue_many``."""
    if not tasks:
        return []
    now = time.time() if now is None else now
    first = plan_enqueue(tasks[0], options, now)
    plans = [first]
    t = first.msg
    kind, process_at, unique_ttl, process_in = first.kind, first.process_at, first.unique_ttl, first.process_in
    unique = bool(t.unique_key)
    in_handler = current_task() is not None
    checked_type = t.type
    for task, tid in zip(tasks[1:], new_task_ids(len(tasks) - 1), strict=False):
        if not isinstance(task, Task):
            raise TypeError(f"enqueue_many() needs fastq.Task objects, not {type(task).__name__}")
        if task.type != checked_type:  # as plan_enqueue: all tasks are checked before any is written
            checked_type = _validate.task_type(task.type)
        headers = _headers_with_lineage(task) if (task.headers or in_handler) else None
        msg = TaskMessage(task.type, task.payload, tid, t.queue, t.retry, 0, "", t.timeout, t.deadline,
                          keys.unique_key(t.queue, task.type, task.payload) if unique else "", 0, t.retention, 0,
                          t.group_key, headers)
        plans.append(EnqueuePlan(msg, kind, process_at, unique_ttl, process_in))
    return plans
