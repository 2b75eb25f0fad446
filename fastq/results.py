"""Task results: what a handler leaves for whoever inspects the task later.

Two ways, both ending in the Asynq ``result`` field of the task hash (shown by
``Inspector.get_task_info(...).result``, ``fastq task inspect``, Go's Inspector and asynqmon):

* **Return bytes** from the handler. They are stored with the task's completion, in the
  same round trip, when the task is kept after success (``retention`` > 0). Without
  retention a successful task is deleted, result and all, exactly as in Asynq (#716).
* **``fastq.result_writer()``** while the handler runs, like Asynq's ``ResultWriter``:
  ``result_writer().write(b"...")`` in a sync handler, ``await result_writer().awrite(b"...")``
  in an async one. It is written at once (visible while the task runs), refused once the
  task was cancelled or passed its deadline, and never creates a task hash that is gone.
"""
from __future__ import annotations

import asyncio
from typing import Any

from fastq.context import _require

__all__ = ["ResultWriter", "result_writer"]


class ResultStore:
    """One per worker process: the worker's Redis seam (``fastq._rdb.worker.Broker``) and event loop."""

    def __init__(self, broker: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.broker = broker
        self.loop = loop

    async def write(self, queue: str, task_id: str, data: bytes) -> bool:
        return bool(await self.broker.write_result(queue, task_id, data))


class ResultWriter:
    """Writes the running task's result (Asynq's ``ResultWriter``); get it with ``fastq.result_writer()``.

    Each write replaces the task's ``result`` field in Redis at once; it outlives the handler
    only when the task was enqueued with ``retention``.
    """

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self.task_id = ctx.task_id

    def _check(self, data: Any) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a task result must be bytes, not {type(data).__name__}")
        if self._ctx.cancelled:
            raise RuntimeError(f"task {self.task_id} was cancelled or passed its deadline; result not written")
        if self._ctx.results is None:
            raise RuntimeError("no result store: result_writer() works inside a fastq worker")
        return bytes(data)

    async def awrite(self, data: bytes) -> int:
        """Store ``data`` as the task's result (async handlers); returns its length."""
        data = self._check(data)
        if not await self._ctx.results.write(self._ctx.queue, self.task_id, data):
            raise RuntimeError(f"task {self.task_id} no longer exists; result not written")
        return len(data)

    def write(self, data: bytes, timeout: float = 10.0) -> int:
        """Store ``data`` as the task's result (sync handlers, in their thread); returns its length."""
        data = self._check(data)
        store = self._ctx.results
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is store.loop:
            raise RuntimeError("result_writer().write() would block the event loop; "
                               "use 'await fastq.result_writer().awrite(data)' in async handlers")
        future = asyncio.run_coroutine_threadsafe(store.write(self._ctx.queue, self.task_id, data), store.loop)
        if not future.result(timeout):
            raise RuntimeError(f"task {self.task_id} no longer exists; result not written")
        return len(data)


def result_writer() -> ResultWriter:
    """The result writer of the running task (raises ``NoTaskContextError`` outside a handler)."""
    return ResultWriter(_require("result_writer"))
