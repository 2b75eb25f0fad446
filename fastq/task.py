"""User-facing value objects: Task, TaskInfo and TaskState."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from fastq import _validate


class TaskState(str, enum.Enum):
    """The state strings Asynq stores in the ``state`` field of a task hash."""

    ACTIVE = "active"
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RETRY = "retry"
    ARCHIVED = "archived"
    COMPLETED = "completed"
    AGGREGATING = "aggregating"

    def __str__(self) -> str:
        return self.value


class Task:
    """A unit of work: a type name that selects the handler and an opaque payload.

    ``headers`` is Asynq's string map (TaskMessage field 15). A handler receives
    a ``Task``; ``fastq.get_task_id()`` gives the ID of the task being run.

    ``type`` must be a non-blank str of valid UTF-8 (no lone surrogates) without control
    characters (NUL, newline, tab, ...), at most 1024 bytes of UTF-8; header keys and values
    valid UTF-8. Anything else raises ``InvalidOptionError`` (a ``ValueError``) here, before
    anything can be written; see ``fastq._validate`` for why.
    """

    __slots__ = ("type", "payload", "headers")

    def __init__(self, type: str, payload: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        _validate.task_type(type)
        if isinstance(payload, (bytearray, memoryview)):
            payload = bytes(payload)
        elif not isinstance(payload, bytes):
            raise TypeError(
                f"task payload must be bytes, not {_tname(payload)} (encode it first, e.g. json.dumps(x).encode())"
            )
        if headers is not None:
            headers = _validate.headers(headers)
        self.type = type
        self.payload = payload
        self.headers = headers or {}

    @classmethod
    def _trusted(cls, type: str, payload: bytes, headers: dict[str, str]) -> "Task":
        """Build a Task from a decoded message without re-validating (worker hot path)."""
        task = cls.__new__(cls)
        task.type = type
        task.payload = payload
        task.headers = headers
        return task

    def __repr__(self) -> str:
        return f"Task(type={self.type!r}, payload={self.payload[:32]!r}{'...' if len(self.payload) > 32 else ''})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return (self.type, self.payload, self.headers) == (other.type, other.payload, other.headers)

    __hash__ = None  # type: ignore[assignment]


def _tname(value: object) -> str:
    return type(value).__name__


@dataclass
class TaskInfo:
    """What fastq knows about an enqueued task (Asynq's ``TaskInfo``)."""

    id: str
    queue: str
    type: str
    payload: bytes
    state: TaskState
    max_retry: int = 25
    retried: int = 0
    last_err: str = ""
    last_failed_at: datetime | None = None
    timeout: float = 0.0
    deadline: datetime | None = None
    group: str = ""
    next_process_at: datetime | None = None
    retention: float = 0.0
    completed_at: datetime | None = None
    headers: dict[str, str] = field(default_factory=dict)
    result: bytes | None = None
    is_orphaned: bool = False  # Inspector, active tasks only: its lease has expired (worker gone?)

    @classmethod
    def from_message(cls, msg: Any, state: TaskState, next_process_at: datetime | None = None) -> "TaskInfo":
        # positional: this runs once per task returned by enqueue_many
        failed, deadline, completed = msg.last_failed_at, msg.deadline, msg.completed_at
        return cls(msg.id, msg.queue, msg.type, msg.payload, state, msg.retry, msg.retried, msg.error_msg,
                   _from_unix(failed) if failed else None, float(msg.timeout),
                   _from_unix(deadline) if deadline else None, msg.group_key, next_process_at,
                   float(msg.retention), _from_unix(completed) if completed else None,
                   dict(msg.headers) if msg.headers else {})


def _from_unix(seconds: int) -> datetime | None:
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds else None
