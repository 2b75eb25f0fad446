"""The hook contract: what observers of a worker (metrics, tracing) are told, and when.

A hook is any object in ``WorkerConfig.hooks``; it defines whichever of the methods of ``Hook``
it cares about (a missing method is skipped). Every call runs on the worker's event loop; a hook
that raises is logged and never breaks the worker. ``Hooks`` is the list the worker calls.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Protocol

from fastq.context import TaskContext

__all__ = ["Hook", "Hooks", "OUTCOMES", "LOST"]

log = logging.getLogger("fastq.processor")

# The ``outcome`` of ``task_finished``: the kinds of fastq._rdb.outcome, and "lost" for a task
# stopped because its lease was lost (nothing is written: lease recovery owns it, as in Asynq).
LOST = "lost"
OUTCOMES = ("done", "complete", "retry", "archive", "requeue", LOST)


class Hook(Protocol):
    """Every method a hook may define (each one optional)."""

    def task_started(self, ctx: TaskContext) -> None:
        """A claimed task is about to run (before its handler is called)."""

    def task_finished(self, ctx: TaskContext, outcome: str, exc: Optional[BaseException], seconds: float) -> None:
        """A task ended: ``outcome`` is one of ``OUTCOMES``; ``exc`` what the handler raised (or
        the error of a task stopped by deadline, cancellation, shutdown or lost lease), None on
        success; ``seconds`` the time since it started."""

    def redis_error(self, operation: str, exc: BaseException) -> None:
        """A Redis call of ``operation`` (dequeue, ack, heartbeat, forward, lease, ...) failed."""

    def redis_restored(self, operation: str, seconds_down: float) -> None:
        """``operation`` succeeded again after failing for ``seconds_down``."""

    def loop_blocked(self, ctx: Optional[TaskContext], seconds: float) -> None:
        """The event loop was blocked for ``seconds``, by the task of ``ctx`` (None: no task)."""


class Hooks(list[Any]):
    """The hooks of one worker (a list: its truth value is a C-level check on the hot path);
    ``call(name, *args)`` calls ``name`` on each hook that defines it."""

    __slots__ = ()

    def call(self, name: str, *args: Any) -> None:
        for hook in self:
            method = getattr(hook, name, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:  # an observer must never break the worker
                log.exception("hook %r.%s raised", hook, name)
