"""TaskRef: what enqueueing an App task returns."""
from __future__ import annotations

from typing import Any

from fastq.task import TaskInfo

__all__ = ["TaskRef"]

_NO_VALUE: Any = object()


class TaskRef:
    """A reference to one enqueued App task: ``.id``, ``.queue``, ``.info`` (the ``TaskInfo``
    written at enqueue: state, options, payload).

    A task run eagerly (``with app.eager():``) has run already: ``.value`` is what it returned
    (through the same JSON round trip a worker's stored result takes).
    """

    __slots__ = ("info", "_value")

    def __init__(self, info: TaskInfo, value: Any = _NO_VALUE) -> None:
        self.info = info
        self._value = value

    @property
    def id(self) -> str:
        """The task ID (Asynq's), as the Inspector, the CLI and the dashboard show it."""
        return self.info.id

    @property
    def queue(self) -> str:
        """The queue the task was written to."""
        return self.info.queue

    @property
    def type(self) -> str:
        """The task type (the App task's name)."""
        return self.info.type

    @property
    def eager(self) -> bool:
        """Whether the task ran in-process at enqueue (``app.eager()``) instead of being written to Redis."""
        return self._value is not _NO_VALUE

    @property
    def value(self) -> Any:
        """The return value of a task run eagerly; ``AttributeError`` for a task written to Redis
        (its stored result is in ``fastq.Inspector().get_task_info(ref.queue, ref.id).result``)."""
        if self._value is _NO_VALUE:
            raise AttributeError(f"task {self.id!r} was enqueued to Redis, not run eagerly: its value is not "
                                 f"known here (a kept result is in Inspector.get_task_info(queue, id).result)")
        return self._value

    def __repr__(self) -> str:
        return f"TaskRef(id={self.id!r}, queue={self.queue!r}, type={self.type!r}, state={self.info.state.value!r})"
