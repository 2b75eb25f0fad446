"""TaskRef: what enqueueing an App task returns; ``result()`` waits for the task's return value."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from fastq.errors import TaskFailedError
from fastq.task import TaskInfo

if TYPE_CHECKING:
    from fastq._rdb.settled import Settled, SettledWatch
    from fastq.app.task import AppTask

__all__ = ["TaskRef"]

_NO_VALUE: Any = object()


class TaskRef:
    """A reference to one enqueued App task: ``.id``, ``.queue``, ``.info`` (the ``TaskInfo``
    written at enqueue: state, options, payload), and ``result(timeout)`` / ``await
    aresult(timeout)``, the task's return value once a worker has run it.

    A task run eagerly (``with app.eager():``) has run already: ``.value`` is what it returned
    (through the same JSON round trip a worker's stored result takes), and ``result()`` returns it
    at once.
    """

    __slots__ = ("info", "_value", "_task")

    def __init__(self, info: TaskInfo, value: Any = _NO_VALUE, *, task: Optional[AppTask[Any, Any]] = None) -> None:
        self.info = info
        self._value = value
        self._task = task

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
        (wait for it with ``result()``)."""
        if self._value is _NO_VALUE:
            raise AttributeError(f"task {self.id!r} was enqueued to Redis, not run eagerly: wait for its value "
                                 f"with result(timeout)")
        return self._value

    # ---------------------------------------------------------------- results

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait until the task has finished and return its return value (decoded by the task's
        return annotation; ``bytes`` as stored).

        Raises ``fastq.TaskFailedError`` (with Asynq's error text) when the task was archived: its
        retries are used up, or it raised an exception outside ``retry_on``. Raises
        ``TimeoutError`` when it has not finished within ``timeout`` seconds (None: no limit; a
        task that is retried goes on being waited for). Waiting does not poll Redis: the worker's
        acknowledgement publishes a notice that wakes every waiter of the process at once (one
        shared subscription). A task that kept no result (enqueued with ``retention=0``, so it was
        deleted when done) returns None.
        """
        return self._result(timeout)

    async def aresult(self, timeout: Optional[float] = None) -> Any:
        """``result`` for async code: the event loop is never blocked."""
        return await self._aresult(timeout)

    def _result(self, timeout: Optional[float], later: bool = False) -> Any:
        """``result``; with ``later`` the task may not exist yet (a workflow step created by the
        step before it): no hash means "not yet", not "done and deleted"."""
        if self._value is not _NO_VALUE:
            return self._value
        return self._outcome(self._watch().wait(self.queue, self.id, _timeout(timeout), later))

    async def _aresult(self, timeout: Optional[float], later: bool = False) -> Any:
        if self._value is not _NO_VALUE:
            return self._value
        return self._outcome(await self._watch().await_(self.queue, self.id, _timeout(timeout), later))

    def _watch(self) -> SettledWatch:
        from fastq._rdb.settled import watch_for

        if self._task is None:
            raise RuntimeError(f"task {self.id!r}: this TaskRef was not made by an App task's enqueue(); "
                               f"it cannot wait for a result")
        return watch_for(self._task.app.client.redis)

    def _outcome(self, settled: Settled) -> Any:
        if settled.state == "archived":
            raise TaskFailedError(self.id, self.queue, settled.error)
        if settled.result is None:
            return None
        assert self._task is not None
        return self._task.signature.load_result(settled.result)

    def __repr__(self) -> str:
        return f"TaskRef(id={self.id!r}, queue={self.queue!r}, type={self.type!r}, state={self.info.state.value!r})"


def _timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    return float(timeout)
