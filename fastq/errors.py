"""Exceptions raised by fastq, and the signals handlers use to steer retries."""
from __future__ import annotations


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

    def __init__(self, ids: list[str], queue: str, enqueued: list | None = None) -> None:
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
