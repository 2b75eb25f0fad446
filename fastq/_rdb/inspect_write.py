"""The Inspector's writes: delete, run, archive, update, pause and remove queues.

Steps generators like the reads (``inspect_read``), run by ``fastq.inspect.Inspector``.

Single-task operations are one script each with Asynq's return codes mapped to typed
errors. Bulk (``*_all``) operations move or delete at most ``BATCH_SIZE`` tasks per
script call and loop, so 100k tasks never block Redis in one long script. Each batch
is atomic; the whole operation is not: it handles at most the number of tasks the
container held when it started (tasks added meanwhile may or may not be included).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from fastq import keys
from fastq._codec import encode_message
from fastq._rdb.calls import Call, Steps, cmd, script
from fastq._rdb.flow import gone_call
from fastq._rdb.inspect_read import check_queue, queue_steps, task_message, task_state
from fastq._rdb.scripts import SCRIPTS
from fastq.errors import (
    CorruptDataError,
    InvalidOptionError,
    QueueHasActiveTasksError,
    QueueNotEmptyError,
    QueueNotFoundError,
    QueuePausedStateError,
    TaskActiveError,
    TaskAlreadyArchivedError,
    TaskAlreadyPendingError,
    TaskNotFoundError,
    TaskNotScheduledError,
)
from fastq.inspect import _common as c

DELETE_TASK = SCRIPTS["inspect_delete_task"]
RUN_TASK = SCRIPTS["inspect_run_task"]
ARCHIVE_TASK = SCRIPTS["inspect_archive_task"]
UPDATE_PAYLOAD = SCRIPTS["inspect_update_payload"]
TASK_INFO = SCRIPTS["inspect_task_info"]
DELETE_BATCH = SCRIPTS["inspect_delete_batch"]
RUN_BATCH = SCRIPTS["inspect_run_batch"]
ARCHIVE_BATCH = SCRIPTS["inspect_archive_batch"]
REMOVE_QUEUE = SCRIPTS["inspect_remove_queue"]

Progress = Callable[[int, int], None]  # (done, total)


def _task_args(queue: str, task_id: str) -> None:
    c.name("queue", queue)
    c.name("task ID", task_id)


def _unexpected(queue: str, task_id: str, code: int) -> Exception:
    if code == -3:
        return CorruptDataError(keys.task_key(queue, task_id), "the task hash has an unknown or missing state")
    return RuntimeError(f"unexpected reply {code} from Redis for task {task_id!r} in queue {queue!r}")


@queue_steps
def delete_task(queue: str, task_id: str) -> Steps[None]:
    _task_args(queue, task_id)
    yield from check_queue(queue)
    (code,) = yield [script(DELETE_TASK, [keys.task_key(queue, task_id), keys.groups_key(queue)],
                            [task_id, keys.queue_prefix(queue), keys.group_key_prefix(queue)])]
    if code == 0:
        raise TaskNotFoundError(queue, task_id)
    if code == -1:
        raise TaskActiveError(queue, task_id, "delete")
    if code != 1:
        raise _unexpected(queue, task_id, code)
    # a workflow step: nothing will follow it, end its workflow now rather than at the janitor's sweep
    (link,) = yield [cmd("hget", keys.flow_links_key(queue), task_id)]
    if link is not None:
        yield [gone_call(queue, task_id, link, int(time.time()))]


@queue_steps
def run_task(queue: str, task_id: str) -> Steps[None]:
    _task_args(queue, task_id)
    yield from check_queue(queue)
    (code,) = yield [script(RUN_TASK, [keys.task_key(queue, task_id), keys.pending_key(queue), keys.groups_key(queue)],
                            [task_id, keys.queue_prefix(queue), keys.group_key_prefix(queue), time.time_ns()])]
    if code == 0:
        raise TaskNotFoundError(queue, task_id)
    if code == -1:
        raise TaskActiveError(queue, task_id, "run")
    if code == -2:
        raise TaskAlreadyPendingError(queue, task_id)
    if code != 1:
        raise _unexpected(queue, task_id, code)


def _archive_times() -> tuple[int, int]:
    now = int(time.time())
    return now, now - c.ARCHIVE_MAX_AGE


@queue_steps
def archive_task(queue: str, task_id: str) -> Steps[None]:
    _task_args(queue, task_id)
    yield from check_queue(queue)
    now, cutoff = _archive_times()
    (code,) = yield [script(ARCHIVE_TASK, [keys.task_key(queue, task_id), keys.archived_key(queue),
                                           keys.groups_key(queue)],
                            [task_id, now, cutoff, c.ARCHIVE_MAX_SIZE, keys.queue_prefix(queue),
                             keys.group_key_prefix(queue), keys.task_key_prefix(queue)])]
    if code == 0:
        raise TaskNotFoundError(queue, task_id)
    if code == -1:
        raise TaskAlreadyArchivedError(queue, task_id)
    if code == -2:
        raise TaskActiveError(queue, task_id, "archive")
    if code != 1:
        raise _unexpected(queue, task_id, code)


@queue_steps
def update_task_payload(queue: str, task_id: str, payload: Any) -> Steps[None]:
    """Replace a scheduled task's payload; everything else in its message stays."""
    _task_args(queue, task_id)
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise InvalidOptionError(f"payload must be bytes, not {type(payload).__name__}")
    tkey = keys.task_key(queue, task_id)
    for _ in range(10):  # compare-and-set: retry if the message changed under us
        exists, info = yield [cmd("sismember", keys.ALL_QUEUES, queue),
                              script(TASK_INFO, [tkey], [task_id, keys.queue_prefix(queue)])]
        if not exists:
            raise QueueNotFoundError(queue)
        if info == 0:
            raise TaskNotFoundError(queue, task_id)
        raw_msg, raw_state = info[0], info[1]
        state = task_state(queue, task_id, raw_state)
        if state.value != "scheduled":
            raise TaskNotScheduledError(queue, task_id, state.value)
        msg = task_message(queue, task_id, raw_msg)
        msg.payload = payload
        (reply,) = yield [script(UPDATE_PAYLOAD, [tkey], [encode_message(msg), raw_msg])]
        code = int(reply[0])
        if code == 1:
            return
        if code == 0:
            raise TaskNotFoundError(queue, task_id)
        if code == -1:
            raise TaskNotScheduledError(queue, task_id, c.text(reply[1]))
    raise RuntimeError(f"task {task_id!r} in queue {queue!r} kept changing; payload not updated")


# ---------------------------------------------------------------- bulk operations

def _source(queue: str, state: str, group: str) -> tuple[str, str]:
    """The container key of ``state`` and whether it is a "list" or a "zset"."""
    if state == "pending":
        return keys.pending_key(queue), "list"
    if state == "aggregating":
        return keys.group_key(queue, group), "zset"
    return f"{keys.queue_prefix(queue)}{state}", "zset"


def _bulk(queue: str, state: str, group: str, progress: Progress | None, batch: int,
          make_call: Callable[[str, str, int], Call]) -> Steps[int]:
    source, kind = _source(queue, state, group)
    size = cmd("llen", source) if kind == "list" else cmd("zcard", source)
    exists, total = yield [cmd("sismember", keys.ALL_QUEUES, queue), size]
    if not exists:
        raise QueueNotFoundError(queue)
    done = 0
    if progress is not None:
        progress(0, total)
    while done < total:
        (n,) = yield [make_call(source, kind, min(batch, total - done))]
        if n == 0:
            break
        done += n
        if progress is not None:
            progress(done, total)
    return done


def _bulk_args(queue: str, state: Any, group: Any, allowed: tuple[str, ...], operation: str,
               batch: Any) -> tuple[str, str]:
    c.name("queue", queue)
    st = c.state(state, allowed, operation)
    c.positive_int("batch_size", batch)
    return st, c.group_for(st, group)


@queue_steps
def delete_all(queue: str, state: Any, group: str | None = None, progress: Progress | None = None,
               batch: int = c.BATCH_SIZE) -> Steps[int]:
    """Delete every task in ``state``; return how many. Frees their uniqueness locks."""
    st, grp = _bulk_args(queue, state, group, c.DELETE_ALL_STATES, "delete all", batch)
    return (yield from _bulk(queue, st, grp, progress, batch, lambda src, kind, n: script(
        DELETE_BATCH, [src, keys.groups_key(queue)], [keys.task_key_prefix(queue), n, kind, grp])))


@queue_steps
def run_all(queue: str, state: Any, group: str | None = None, progress: Progress | None = None,
            batch: int = c.BATCH_SIZE) -> Steps[int]:
    """Move every task in ``state`` to pending (earliest first); return how many."""
    st, grp = _bulk_args(queue, state, group, c.RUN_ALL_STATES, "run all", batch)
    return (yield from _bulk(queue, st, grp, progress, batch, lambda src, kind, n: script(
        RUN_BATCH, [src, keys.pending_key(queue), keys.groups_key(queue)],
        [keys.task_key_prefix(queue), n, time.time_ns(), grp])))


@queue_steps
def archive_all(queue: str, state: Any, group: str | None = None, progress: Progress | None = None,
                batch: int = c.BATCH_SIZE) -> Steps[int]:
    """Archive every task in ``state``; return how many (the archive keeps Asynq's 10,000 cap)."""
    st, grp = _bulk_args(queue, state, group, c.ARCHIVE_ALL_STATES, "archive all", batch)

    def call(src: str, kind: str, n: int) -> Call:
        now, cutoff = _archive_times()
        return script(ARCHIVE_BATCH, [src, keys.archived_key(queue), keys.groups_key(queue)],
                      [keys.task_key_prefix(queue), n, kind, grp, now, cutoff, c.ARCHIVE_MAX_SIZE])
    return (yield from _bulk(queue, st, grp, progress, batch, call))


# ---------------------------------------------------------------- queues

@queue_steps
def delete_queue(queue: str, force: bool = False, batch: int = c.BATCH_SIZE) -> Steps[None]:
    """Remove a queue (Asynq's DeleteQueue): empty unless ``force``; never with active tasks."""
    c.name("queue", queue)
    c.positive_int("batch_size", batch)
    yield from check_queue(queue)
    q = queue
    call = script(REMOVE_QUEUE, [keys.pending_key(q), keys.active_key(q), keys.scheduled_key(q),
                                 keys.retry_key(q), keys.archived_key(q), keys.lease_key(q)],
                  [keys.task_key_prefix(q), "1" if force else "0", batch])
    while True:
        (code,) = yield [call]
        if code == 1:
            break
        if code == -1:
            raise QueueNotEmptyError(queue)
        if code == -2:
            raise QueueHasActiveTasksError(queue)
    yield [cmd("srem", keys.ALL_QUEUES, queue)]


@queue_steps
def pause_queue(queue: str) -> Steps[None]:
    c.name("queue", queue)
    yield from check_queue(queue)
    (created,) = yield [cmd("setnx", keys.paused_key(queue), int(time.time()))]
    if not created:
        raise QueuePausedStateError(queue, True)


@queue_steps
def unpause_queue(queue: str) -> Steps[None]:
    c.name("queue", queue)
    yield from check_queue(queue)
    (deleted,) = yield [cmd("delete", keys.paused_key(queue))]
    if not deleted:
        raise QueuePausedStateError(queue, False)


def cancel_processing(task_id: str) -> Steps[int]:
    """``PUBLISH asynq:cancel <id>``; returns how many subscribers (worker processes) got it."""
    c.name("task ID", task_id)
    (receivers,) = yield [cmd("publish", keys.CANCEL_CHANNEL, task_id)]
    return int(receivers)
