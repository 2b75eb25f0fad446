"""``Inspector`` and ``AsyncInspector``: Go Asynq's Inspector in snake case.

Both classes run the same I/O-free steps (``fastq._rdb.inspect_read`` and
``inspect_write``); only the driver differs. Every queue method first checks
``SISMEMBER asynq:queues <q>`` and raises ``QueueNotFoundError``, as Go does. See the
README section "Inspecting and managing queues" and ``docs`` in ``fastq/inspect/__init__.py``
for the differences from Go.
"""
from __future__ import annotations

from typing import Any, TypeVar

from fastq._rdb import inspect_read as _read
from fastq._rdb import inspect_write as _write
from fastq._rdb.calls import Steps, adrive, drive
from fastq._rdb.inspect_write import Progress
from fastq.inspect._common import BATCH_SIZE, DEFAULT_PAGE_SIZE
from fastq.inspect.models import (
    ChordInfo,
    DailyStats,
    GroupInfo,
    QueueInfo,
    SchedulerEnqueueEvent,
    SchedulerEntry,
    ServerInfo,
)
from fastq.redis.facade import async_client, sync_client
from fastq.task import TaskInfo

__all__ = ["Inspector", "AsyncInspector"]

P = DEFAULT_PAGE_SIZE
T = TypeVar("T")


class Inspector:
    """Inspect and manage queues, tasks, servers and periodic entries from sync code.

    ``Inspector(url_or_redis=None)`` takes a Redis URL (default ``$FASTQ_REDIS_URL`` or
    ``redis://127.0.0.1:6379/0``) or a ``redis.Redis`` made with ``decode_responses=False``.
    """

    def __init__(self, redis: Any = None) -> None:
        self._owned = redis is None or isinstance(redis, str)
        self._redis = sync_client(redis)

    @property
    def redis(self) -> Any:
        return self._redis

    def _run(self, steps: Steps[T]) -> T:
        return drive(self._redis, steps)

    # queues
    def queues(self) -> list[str]:
        """Names in ``asynq:queues``, sorted."""
        return self._run(_read.queues())

    def get_queue_info(self, queue: str) -> QueueInfo:
        return self._run(_read.queue_info(queue))

    def get_queue_infos(self, queues: list[str] | None = None) -> list[QueueInfo]:
        """QueueInfo of several queues (default: all) in one round trip."""
        names = self.queues() if queues is None else list(queues)
        return self._run(_read.queue_infos(names))

    def history(self, queue: str, days: int = 7) -> list[DailyStats]:
        """Processed/failed counts of the last ``days`` UTC days, today first."""
        return self._run(_read.history(queue, days))

    def delete_queue(self, queue: str, force: bool = False) -> None:
        """Remove an empty queue; with ``force`` delete its pending/scheduled/retry/archived tasks too."""
        return self._run(_write.delete_queue(queue, force))

    def pause_queue(self, queue: str) -> None:
        return self._run(_write.pause_queue(queue))

    def unpause_queue(self, queue: str) -> None:
        return self._run(_write.unpause_queue(queue))

    def groups(self, queue: str) -> list[GroupInfo]:
        return self._run(_read.groups(queue))

    def cluster_key_slot(self, queue: str) -> int:
        return self._run(_read.cluster_key_slot(queue))

    # tasks
    def get_task_info(self, queue: str, task_id: str) -> TaskInfo:
        return self._run(_read.task_info(queue, task_id))

    def get_chord(self, queue: str, chord_id: str) -> ChordInfo:
        """A chord's progress (``fastq.chord``) by its callback's task ID and queue:
        members done/total and its state; ``TaskNotFoundError`` when there is no such chord."""
        return self._run(_read.chord_info(queue, chord_id))

    def list_tasks(self, queue: str, state: str, page: int = 1, page_size: int = P,
                   group: str | None = None) -> list[TaskInfo]:
        """One page of tasks in ``state`` (``group`` is required for ``aggregating``)."""
        return self._run(_read.list_tasks(queue, state, page, page_size, group))

    def list_pending_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        """Oldest first, like Go: page 1 holds the next tasks to be dequeued."""
        return self.list_tasks(queue, "pending", page, page_size)

    def list_active_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        """Active tasks; ``is_orphaned`` marks those whose lease has expired."""
        return self.list_tasks(queue, "active", page, page_size)

    def list_scheduled_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return self.list_tasks(queue, "scheduled", page, page_size)

    def list_retry_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return self.list_tasks(queue, "retry", page, page_size)

    def list_archived_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return self.list_tasks(queue, "archived", page, page_size)

    def list_completed_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return self.list_tasks(queue, "completed", page, page_size)

    def list_aggregating_tasks(self, queue: str, group: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return self.list_tasks(queue, "aggregating", page, page_size, group)

    def delete_task(self, queue: str, task_id: str) -> None:
        return self._run(_write.delete_task(queue, task_id))

    def run_task(self, queue: str, task_id: str) -> None:
        return self._run(_write.run_task(queue, task_id))

    def archive_task(self, queue: str, task_id: str) -> None:
        return self._run(_write.archive_task(queue, task_id))

    def update_task_payload(self, queue: str, task_id: str, payload: bytes) -> None:
        """Replace the payload of a scheduled task."""
        return self._run(_write.update_task_payload(queue, task_id, payload))

    def cancel_processing(self, task_id: str) -> int:
        """Ask the worker running ``task_id`` to cancel it; returns the number of listeners reached."""
        return self._run(_write.cancel_processing(task_id))

    # bulk
    def delete_all_tasks(self, queue: str, state: str, group: str | None = None,
                         progress: Progress | None = None, batch_size: int = BATCH_SIZE) -> int:
        """Delete every task in ``state``, ``batch_size`` per script call; ``progress(done, total)``."""
        return self._run(_write.delete_all(queue, state, group, progress, batch_size))

    def run_all_tasks(self, queue: str, state: str, group: str | None = None,
                      progress: Progress | None = None, batch_size: int = BATCH_SIZE) -> int:
        return self._run(_write.run_all(queue, state, group, progress, batch_size))

    def archive_all_tasks(self, queue: str, state: str, group: str | None = None,
                          progress: Progress | None = None, batch_size: int = BATCH_SIZE) -> int:
        return self._run(_write.archive_all(queue, state, group, progress, batch_size))

    def delete_all_pending_tasks(self, queue: str) -> int:
        return self.delete_all_tasks(queue, "pending")

    def delete_all_scheduled_tasks(self, queue: str) -> int:
        return self.delete_all_tasks(queue, "scheduled")

    def delete_all_retry_tasks(self, queue: str) -> int:
        return self.delete_all_tasks(queue, "retry")

    def delete_all_archived_tasks(self, queue: str) -> int:
        return self.delete_all_tasks(queue, "archived")

    def delete_all_completed_tasks(self, queue: str) -> int:
        return self.delete_all_tasks(queue, "completed")

    def delete_all_aggregating_tasks(self, queue: str, group: str) -> int:
        return self.delete_all_tasks(queue, "aggregating", group)

    def run_all_scheduled_tasks(self, queue: str) -> int:
        return self.run_all_tasks(queue, "scheduled")

    def run_all_retry_tasks(self, queue: str) -> int:
        return self.run_all_tasks(queue, "retry")

    def run_all_archived_tasks(self, queue: str) -> int:
        return self.run_all_tasks(queue, "archived")

    def run_all_aggregating_tasks(self, queue: str, group: str) -> int:
        return self.run_all_tasks(queue, "aggregating", group)

    def archive_all_pending_tasks(self, queue: str) -> int:
        return self.archive_all_tasks(queue, "pending")

    def archive_all_scheduled_tasks(self, queue: str) -> int:
        return self.archive_all_tasks(queue, "scheduled")

    def archive_all_retry_tasks(self, queue: str) -> int:
        return self.archive_all_tasks(queue, "retry")

    def archive_all_aggregating_tasks(self, queue: str, group: str) -> int:
        return self.archive_all_tasks(queue, "aggregating", group)

    # servers, schedulers, health
    def servers(self) -> list[ServerInfo]:
        return self._run(_read.servers())

    def scheduler_entries(self) -> list[SchedulerEntry]:
        return self._run(_read.scheduler_entries())

    def list_scheduler_enqueue_events(self, entry_id: str, page: int = 1,
                                      page_size: int = P) -> list[SchedulerEnqueueEvent]:
        """Newest first."""
        return self._run(_read.scheduler_events(entry_id, page, page_size))

    def check(self, queue: str | None = None) -> int:
        """Run a real Lua script; return Redis time (Unix s). Raises if Redis or ``queue`` is missing."""
        return self._run(_read.check(queue))

    def redis_info(self) -> dict[str, Any]:
        return self._run(_read.redis_info())

    def close(self) -> None:
        if self._owned:
            self._redis.close()

    def __enter__(self) -> "Inspector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncInspector:
    """``Inspector`` for asyncio code: the same methods, awaited."""

    def __init__(self, redis: Any = None) -> None:
        self._owned = redis is None or isinstance(redis, str)
        self._redis = async_client(redis)

    @property
    def redis(self) -> Any:
        return self._redis

    async def _run(self, steps: Steps[T]) -> T:
        return await adrive(self._redis, steps)

    async def queues(self) -> list[str]:
        return await self._run(_read.queues())

    async def get_queue_info(self, queue: str) -> QueueInfo:
        return await self._run(_read.queue_info(queue))

    async def get_queue_infos(self, queues: list[str] | None = None) -> list[QueueInfo]:
        names = await self.queues() if queues is None else list(queues)
        return await self._run(_read.queue_infos(names))

    async def history(self, queue: str, days: int = 7) -> list[DailyStats]:
        return await self._run(_read.history(queue, days))

    async def delete_queue(self, queue: str, force: bool = False) -> None:
        return await self._run(_write.delete_queue(queue, force))

    async def pause_queue(self, queue: str) -> None:
        return await self._run(_write.pause_queue(queue))

    async def unpause_queue(self, queue: str) -> None:
        return await self._run(_write.unpause_queue(queue))

    async def groups(self, queue: str) -> list[GroupInfo]:
        return await self._run(_read.groups(queue))

    async def cluster_key_slot(self, queue: str) -> int:
        return await self._run(_read.cluster_key_slot(queue))

    async def get_task_info(self, queue: str, task_id: str) -> TaskInfo:
        return await self._run(_read.task_info(queue, task_id))

    async def get_chord(self, queue: str, chord_id: str) -> ChordInfo:
        return await self._run(_read.chord_info(queue, chord_id))

    async def list_tasks(self, queue: str, state: str, page: int = 1, page_size: int = P,
                         group: str | None = None) -> list[TaskInfo]:
        return await self._run(_read.list_tasks(queue, state, page, page_size, group))

    async def list_pending_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return await self.list_tasks(queue, "pending", page, page_size)

    async def list_active_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return await self.list_tasks(queue, "active", page, page_size)

    async def list_scheduled_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return await self.list_tasks(queue, "scheduled", page, page_size)

    async def list_retry_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return await self.list_tasks(queue, "retry", page, page_size)

    async def list_archived_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return await self.list_tasks(queue, "archived", page, page_size)

    async def list_completed_tasks(self, queue: str, page: int = 1, page_size: int = P) -> list[TaskInfo]:
        return await self.list_tasks(queue, "completed", page, page_size)

    async def list_aggregating_tasks(self, queue: str, group: str, page: int = 1,
                                     page_size: int = P) -> list[TaskInfo]:
        return await self.list_tasks(queue, "aggregating", page, page_size, group)

    async def delete_task(self, queue: str, task_id: str) -> None:
        return await self._run(_write.delete_task(queue, task_id))

    async def run_task(self, queue: str, task_id: str) -> None:
        return await self._run(_write.run_task(queue, task_id))

    async def archive_task(self, queue: str, task_id: str) -> None:
        return await self._run(_write.archive_task(queue, task_id))

    async def update_task_payload(self, queue: str, task_id: str, payload: bytes) -> None:
        return await self._run(_write.update_task_payload(queue, task_id, payload))

    async def cancel_processing(self, task_id: str) -> int:
        return await self._run(_write.cancel_processing(task_id))

    async def delete_all_tasks(self, queue: str, state: str, group: str | None = None,
                               progress: Progress | None = None, batch_size: int = BATCH_SIZE) -> int:
        return await self._run(_write.delete_all(queue, state, group, progress, batch_size))

    async def run_all_tasks(self, queue: str, state: str, group: str | None = None,
                            progress: Progress | None = None, batch_size: int = BATCH_SIZE) -> int:
        return await self._run(_write.run_all(queue, state, group, progress, batch_size))

    async def archive_all_tasks(self, queue: str, state: str, group: str | None = None,
                                progress: Progress | None = None, batch_size: int = BATCH_SIZE) -> int:
        return await self._run(_write.archive_all(queue, state, group, progress, batch_size))

    async def delete_all_pending_tasks(self, queue: str) -> int:
        return await self.delete_all_tasks(queue, "pending")

    async def delete_all_scheduled_tasks(self, queue: str) -> int:
        return await self.delete_all_tasks(queue, "scheduled")

    async def delete_all_retry_tasks(self, queue: str) -> int:
        return await self.delete_all_tasks(queue, "retry")

    async def delete_all_archived_tasks(self, queue: str) -> int:
        return await self.delete_all_tasks(queue, "archived")

    async def delete_all_completed_tasks(self, queue: str) -> int:
        return await self.delete_all_tasks(queue, "completed")

    async def delete_all_aggregating_tasks(self, queue: str, group: str) -> int:
        return await self.delete_all_tasks(queue, "aggregating", group)

    async def run_all_scheduled_tasks(self, queue: str) -> int:
        return await self.run_all_tasks(queue, "scheduled")

    async def run_all_retry_tasks(self, queue: str) -> int:
        return await self.run_all_tasks(queue, "retry")

    async def run_all_archived_tasks(self, queue: str) -> int:
        return await self.run_all_tasks(queue, "archived")

    async def run_all_aggregating_tasks(self, queue: str, group: str) -> int:
        return await self.run_all_tasks(queue, "aggregating", group)

    async def archive_all_pending_tasks(self, queue: str) -> int:
        return await self.archive_all_tasks(queue, "pending")

    async def archive_all_scheduled_tasks(self, queue: str) -> int:
        return await self.archive_all_tasks(queue, "scheduled")

    async def archive_all_retry_tasks(self, queue: str) -> int:
        return await self.archive_all_tasks(queue, "retry")

    async def archive_all_aggregating_tasks(self, queue: str, group: str) -> int:
        return await self.archive_all_tasks(queue, "aggregating", group)

    async def servers(self) -> list[ServerInfo]:
        return await self._run(_read.servers())

    async def scheduler_entries(self) -> list[SchedulerEntry]:
        return await self._run(_read.scheduler_entries())

    async def list_scheduler_enqueue_events(self, entry_id: str, page: int = 1,
                                            page_size: int = P) -> list[SchedulerEnqueueEvent]:
        return await self._run(_read.scheduler_events(entry_id, page, page_size))

    async def check(self, queue: str | None = None) -> int:
        return await self._run(_read.check(queue))

    async def redis_info(self) -> dict[str, Any]:
        return await self._run(_read.redis_info())

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()

    async def __aenter__(self) -> "AsyncInspector":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
