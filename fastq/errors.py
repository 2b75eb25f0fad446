"""Exceptions raised by fastq, and the signals handlers use to steer retries."""
from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastq.task import TaskInfo


class FastqError(Exception):
    """Base class of every error fastq raises itself."""


class DecodeError(FastqError, ValueError):
    """Bytes that are not a valid protobuf message of the expected kind."""


class TaskIDConflictError(FastqError):
    """A task with this ID already exists in the queue (in any state).

    Asynq's ``ErrTaskIDConflict``. For ``enqueue_many``, ``ids`` lists every
    conflicting ID and ``enqueued`` holds the TaskInfo of the tasks that were
    written.
    """

    def __init__(self, ids: list[str], queue: str, enqueued: list[TaskInfo] | None = None) -> None:
        self.ids = list(ids)
        self.queue = queue
        self.enqueued = list(enqueued or [])
        shown = ", ".join(repr(i) for i in self.ids[:5])
        more = f" (+{len(self.ids) - 5} more)" if len(self.ids) > 5 else ""
        super().__init__(f"task ID conflicts with another task in queue {queue!r}: {shown}{more}")


class DuplicateTaskError(FastqError):
    """A unique task is still locked by an earlier copy (Asynq's ``ErrDuplicateTask``)."""

    def __init__(self, unique_key: str) -> None:
        self.unique_key = unique_key
        super().__init__(f"task already exists (unique key {unique_key!r} is held)")


class InvalidOptionError(FastqError, ValueError):
    """An enqueue or server option has a value fastq cannot use."""


class NoTaskContextError(FastqError, LookupError):
    """``get_task_id()`` and friends were called outside a running handler."""


class HandlerNotFoundError(FastqError):
    """No handler is registered for a task type (Asynq's ``ErrHandlerNotFound``)."""

    def __init__(self, task_type: str) -> None:
        self.task_type = task_type
        super().__init__(f"handler not found for task {task_type!r}")


# ---------------------------------------------------------------- Inspector / CLI errors

class QueueNotFoundError(FastqError, LookupError):
    """The queue is not in ``asynq:queues`` (Asynq's ``ErrQueueNotFound``)."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"queue not found: {queue!r}")


class QueueNotEmptyError(FastqError):
    """``delete_queue(q)`` without ``force`` on a queue that still holds tasks (``ErrQueueNotEmpty``)."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"queue is not empty: {queue!r} (use force=True / --force to delete its tasks too)")


class QueueHasActiveTasksError(FastqError):
    """A queue with active tasks cannot be deleted, even with ``force``."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"cannot delete queue {queue!r}: it has active tasks")


class QueuePausedStateError(FastqError):
    """``pause_queue`` on a paused queue, or ``unpause_queue`` on one that is not paused."""

    def __init__(self, queue: str, paused: bool) -> None:
        self.queue = queue
        self.paused = paused
        super().__init__(f"queue {queue!r} is {'already paused' if paused else 'not paused'}")


class TaskNotFoundError(FastqError, LookupError):
    """No task with this ID in this queue (Asynq's ``ErrTaskNotFound``)."""

    def __init__(self, queue: str, task_id: str) -> None:
        self.queue = queue
        self.task_id = task_id
        super().__init__(f"task not found: id {task_id!r} in queue {queue!r}")


class TaskStateError(FastqError):
    """The task exists but its state does not allow the operation (Asynq's FailedPrecondition)."""

    def __init__(self, queue: str, task_id: str, state: str, message: str) -> None:
        self.queue = queue
        self.task_id = task_id
        self.state = state
        super().__init__(f"task {task_id!r} in queue {queue!r}: {message}")


class TaskActiveError(TaskStateError):
    """Active tasks cannot be deleted, archived or run; cancel them with ``cancel_processing``."""

    def __init__(self, queue: str, task_id: str, operation: str) -> None:
        super().__init__(queue, task_id, "active",
                         f"cannot {operation} a task in active state; use cancel_processing instead")


class TaskAlreadyArchivedError(TaskStateError):
    def __init__(self, queue: str, task_id: str) -> None:
        super().__init__(queue, task_id, "archived", "task is already archived")


class TaskAlreadyPendingError(TaskStateError):
    def __init__(self, queue: str, task_id: str) -> None:
        super().__init__(queue, task_id, "pending", "task is already in pending state")


class TaskNotScheduledError(TaskStateError):
    """``update_task_payload`` works on scheduled tasks only (as in Asynq v0.26)."""

    def __init__(self, queue: str, task_id: str, state: str) -> None:
        super().__init__(queue, task_id, state, f"cannot update the payload of a task in {state} state "
                                                "(only scheduled tasks)")


class CorruptDataError(DecodeError):
    """Bytes or fields found in Redis that are not what Asynq writes; ``key`` names where."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"corrupt data at {key!r}: {reason}")


class SkipRetry(Exception):
    """Raise from a handler to archive the task now instead of retrying it.

    Mirrors Asynq's ``SkipRetry``: the task goes to the ``archived`` state.
    Its text reads like Go's ``fmt.Errorf("...: %w", asynq.SkipRetry)``:
    ``SkipRetry("bad input")`` is stored as ``"bad input: skip retry for the task"``.
    """

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}: skip retry for the task" if text else "skip retry for the task"


class RevokeTask(Exception):
    """Raise from a handler to drop the task without retry or archive (Asynq's ``RevokeTask``)."""


class TaskCanceledError(Exception):
    """The running task was cancelled (deadline or explicit cancel); treated as a failure."""


class AppImportError(FastqError):
    """The APP argument of ``fastq-supervisor`` could not be imported or is not a handler."""


class RedisConfigurationError(FastqError):
    """Redis refused fastq in a way no retry can fix: wrong password or user, a missing ACL
    permission, an unknown host, TLS that fails or a plain-text port given as ``rediss://``.

    Raised by ``fastq.connection.preflight``; ``reason`` says what to fix (see
    ``fastq.connection.fatal_reason``), ``url`` is the Redis URL with its password masked.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Redis at {url} {reason}")


# ---------------------------------------------------------------- periodic tasks

class CronSpecError(FastqError, ValueError):
    """A cron spec the scheduler cannot use (syntax, range, descriptor, ``@every`` or ``CRON_TZ=`` zone)."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"invalid cron spec {spec!r}: {reason}")


class TimeZoneError(FastqError, ValueError):
    """A time zone name that ``zoneinfo`` does not know (e.g. the scheduler's ``location``)."""

    def __init__(self, name: object, reason: str = "unknown time zone") -> None:
        self.name = name
        super().__init__(f"{reason}: {name!r} (use an IANA name such as 'UTC' or 'America/New_York')")


class SchedulerEntryNotFoundError(FastqError, LookupError):
    """``unregister(entry_id)`` with an ID the scheduler does not hold."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        super().__init__(f"no scheduler entry with ID {entry_id!r}")


class ConfigProviderError(FastqError):
    """A periodic task config provider failed or returned something that is not a valid config."""


# ---------------------------------------------------------------- typed payloads

class PayloadError(FastqError, ValueError):
    """A payload does not match its task type's schema (see ``fastq.typed``).

    ``field`` is the dotted path of the offending field (``""`` for the payload
    as a whole). Raised at enqueue for a bad object; a handler that receives a
    bad payload turns it into ``SkipRetry`` so the task is archived at once.
    """

    def __init__(self, task_type: str, field: str, reason: str) -> None:
        self.task_type = task_type
        self.field = field
        self.reason = reason
        where = f"field {field!r}: " if field else ""
        super().__init__(f"{task_type} payload: {where}{reason}")


class BrokerFullError(FastqError):
    """Redis refused a write because it is out of memory (``maxmemory`` with ``noeviction``).

    Nothing was written. Running tasks still settle (those scripts may run when Redis is
    full), which frees memory; retry the enqueue later or raise ``maxmemory``.
    """


class PayloadTooLargeError(FastqError, ValueError):
    """A task payload is larger than the client's ``max_payload_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"task payload is {size} bytes, over the limit of {limit} bytes "
                         f"(Client(max_payload_bytes=...) changes it)")


# ---------------------------------------------------------------- App tasks (fastq.App)

class TaskArgumentError(PayloadError, TypeError):
    """Arguments given to an App task's ``enqueue`` that do not fit its signature.

    ``field`` names the parameter (``"user.email"`` for a field inside one; ``""`` when the
    arguments as a whole do not bind, e.g. one is missing). Nothing was enqueued. ``index`` is
    the position of the offending item in ``enqueue_many``, else ``None``. It is a
    ``PayloadError`` (what a bad payload raises on receipt) and a ``TypeError`` (what a plain
    call of the function with such arguments raises).
    """

    def __init__(self, task_type: str, field: str, reason: str, index: int | None = None) -> None:
        FastqError.__init__(self)
        self.task_type = task_type
        self.field = field
        self.reason = reason
        self.index = index
        item = f"item {index}: " if index is not None else ""
        where = f"parameter {field!r}: " if field else ""
        self.args = (f"{task_type} arguments: {item}{where}{reason}",)


class Retry(Exception):
    """Raise from an App task to retry it, after ``in_`` seconds (a number or a ``timedelta``).

    The retry is counted (it uses up one of ``max_retry``, and the task is archived as usual
    once they are used up); without ``in_`` the task's back-off policy picks the delay. A task
    raising ``Retry`` is retried even when the exception is not in its ``retry_on``. The delay
    is honoured by the ``retry_delay`` of ``App.worker_config()``. ``reason`` is the error text
    stored with the task.
    """

    def __init__(self, in_: float | timedelta | None = None, reason: str = "") -> None:
        if isinstance(in_, timedelta):
            in_ = in_.total_seconds()
        if in_ is not None:
            if isinstance(in_, bool) or not isinstance(in_, (int, float)) or not math.isfinite(in_) or in_ < 0:
                raise InvalidOptionError(f"Retry(in_=...) must be a number of seconds >= 0 or a timedelta, "
                                         f"got {in_!r}")
            in_ = float(in_)
        self.in_: float | None = in_
        self.reason = reason
        when = f"retry in {in_:g}s" if in_ is not None else "retry requested"
        super().__init__(f"{reason} ({when})" if reason else when)


class TaskFailedError(FastqError):
    """An App task failed for good: it was archived (or is being retried) with ``error``, Asynq's
    ``last_err`` text, instead of completing. ``task_id`` and ``queue`` say which task."""

    def __init__(self, task_id: str, queue: str, error: str, state: str = "archived") -> None:
        self.task_id = task_id
        self.queue = queue
        self.error = error
        self.state = state
        super().__init__(f"task {task_id!r} in queue {queue!r} is {state}: {error}")
