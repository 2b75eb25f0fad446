"""Inspect and manage fastq / Go Asynq queues: ``Inspector`` and ``AsyncInspector``.

Go Asynq's Inspector, in snake case, on the same Redis data: both give the same
answers. Deliberate differences (all harmless to Go readers):

* Bulk ``*_all`` operations work in script calls of 1000 tasks (Go: one script for
  everything, which blocks Redis on big queues); each batch is atomic, the whole is not.
  ``delete_queue(force=True)`` is batched the same way.
* ``get_queue_info`` and ``groups`` never loop over all groups in one script (#1160):
  up to 1000 groups are summed in the stats script, more are read in SSCAN batches.
* Run (``run_task``, ``run_all_*``) sets ``pending_since``, so queue latency counts the task.
* Archiving from the Inspector deletes the hashes of tasks trimmed from the archive
  (Go's inspector leaks them); ``delete_all_pending_tasks`` frees uniqueness locks.
* ``delete_task`` also deletes a hash whose container lost the ID or whose state is
  unknown (Go fails); ``run_task`` repairs such a task instead of failing.
* ``pause_queue``, ``unpause_queue`` and ``groups`` check that the queue exists (Go
  does not); bad pages and sizes raise ``InvalidOptionError`` (Go clamps them).
* ``cluster_key_slot`` is computed locally (same CRC16 as ``CLUSTER KEYSLOT``), so it
  also works on a single Redis. Negative latencies (clock skew) read 0.
* Lists skip tasks whose message cannot be decoded, as Go does, but log a warning;
  ``get_task_info`` raises ``CorruptDataError`` naming the key.
"""
from typing import TYPE_CHECKING

from fastq.inspect.models import (
    ChordInfo,
    DailyStats,
    GroupInfo,
    QueueInfo,
    SchedulerEnqueueEvent,
    SchedulerEntry,
    ServerInfo,
    WorkerInfo,
)

if TYPE_CHECKING:  # for type checkers and IDEs
    from fastq.inspect.inspector import AsyncInspector, Inspector


def __getattr__(name: str) -> object:
    """``Inspector`` and ``AsyncInspector`` load on first use (PEP 562): the operations they run
    (``fastq._rdb.inspect_read``/``inspect_write``) use this package's models and argument
    checks, which therefore import without the Inspector."""
    if name not in ("Inspector", "AsyncInspector"):
        raise AttributeError(f"module 'fastq.inspect' has no attribute {name!r}")
    from fastq.inspect import inspector

    value = getattr(inspector, name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncInspector", "ChordInfo", "DailyStats", "GroupInfo", "Inspector", "QueueInfo", "SchedulerEnqueueEvent",
    "SchedulerEntry", "ServerInfo", "WorkerInfo",
]
