"""Every Redis key fastq reads or writes, built exactly as Go Asynq builds them.

Per-queue keys carry the queue name as a Redis Cluster hash tag
(``asynq:{<queue>}:...``) so one queue's keys live in one slot. This module is
the only place key names are spelled out.
"""
from __future__ import annotations

import hashlib
import re

PREFIX = "asynq:"

ALL_QUEUES = "asynq:queues"
ALL_SERVERS = "asynq:servers"
ALL_WORKERS = "asynq:workers"
ALL_SCHEDULERS = "asynq:schedulers"
CANCEL_CHANNEL = "asynq:cancel"


def queue_prefix(qname: str) -> str:
    """``asynq:{<qname>}:`` - the prefix every per-queue key starts with."""
    return f"asynq:{{{qname}}}:"


def task_key_prefix(qname: str) -> str:
    return f"asynq:{{{qname}}}:t:"


def task_key(qname: str, task_id: str) -> str:
    return f"asynq:{{{qname}}}:t:{task_id}"


def pending_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:pending"


def active_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:active"


def scheduled_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:scheduled"


def retry_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:retry"


def archived_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:archived"


def completed_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:completed"


def lease_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:lease"


def paused_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:paused"


def processed_total_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:processed"


def failed_total_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:failed"


def processed_key(qname: str, date: str) -> str:
    """Daily processed counter; ``date`` is the UTC day as ``YYYY-MM-DD``."""
    return f"asynq:{{{qname}}}:processed:{date}"


def failed_key(qname: str, date: str) -> str:
    return f"asynq:{{{qname}}}:failed:{date}"


def groups_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:groups"


def group_key_prefix(qname: str) -> str:
    return f"asynq:{{{qname}}}:g:"


def group_key(qname: str, group: str) -> str:
    return f"asynq:{{{qname}}}:g:{group}"


def aggregation_set_key(qname: str, group: str, set_id: str) -> str:
    return f"asynq:{{{qname}}}:g:{group}:{set_id}"


def all_aggregation_sets_key(qname: str) -> str:
    return f"asynq:{{{qname}}}:aggregation_sets"


def unique_key(qname: str, task_type: str, payload: bytes | None) -> str:
    """The uniqueness lock of a task: ``asynq:{q}:unique:<type>:<md5 hex of payload>``.

    Go distinguishes a nil payload (key ends with ``:``) from an empty one (md5
    of the empty string). fastq maps ``None`` *and* ``b""`` to the nil form,
    because ``Task(type)`` without a payload is what ``NewTask(type, nil)``
    means in Go; see the README.
    """
    if not payload:
        return f"asynq:{{{qname}}}:unique:{task_type}:"
    return f"asynq:{{{qname}}}:unique:{task_type}:{hashlib.md5(payload).hexdigest()}"


def _limit_key(qname: str, kind: str, task_type: str, limit_key: str | None) -> str:
    base = f"asynq:{{{qname}}}:{kind}:{task_type}"
    return base if limit_key is None else f"{base}:{limit_key}"


def rate_key(qname: str, task_type: str, limit_key: str | None = None) -> str:
    """String holding the theoretical arrival time (Unix s, Redis clock) of a rate limit:
    ``asynq:{<qname>}:fastq_rate:<type>[:<key>]`` (``fastq.server.limits``)."""
    return _limit_key(qname, "fastq_rate", task_type, limit_key)


def slots_key(qname: str, task_type: str, limit_key: str | None = None) -> str:
    """Sorted set of the IDs holding a concurrency slot, scored by their lease expiry:
    ``asynq:{<qname>}:fastq_slots:<type>[:<key>]``."""
    return _limit_key(qname, "fastq_slots", task_type, limit_key)


def slot_waiters_key(qname: str, task_type: str, limit_key: str | None = None) -> str:
    """Sorted set of the IDs waiting (scheduled) for a concurrency slot, scored by when they began
    to wait: ``asynq:{<qname>}:fastq_wait:<type>[:<key>]``."""
    return _limit_key(qname, "fastq_wait", task_type, limit_key)


def notify_channel(qname: str) -> str:
    """Pub/sub channel fastq's scripts publish to when a queue's pending list stops being empty."""
    return f"asynq:{{{qname}}}:fastq_notify"


def keyspace_channel(db: int, qname: str) -> str:
    """Redis's keyspace-notification channel of the queue's pending list (``notify-keyspace-events``
    with ``K`` and ``l``): what ``--keyspace-wakeup`` workers listen on to see pushes by any client."""
    return f"__keyspace@{db}__:{pending_key(qname)}"


def settled_channel(qname: str) -> str:
    """Pub/sub channel fastq's settle scripts publish to when tasks of a queue reach a final
    state (done, completed, archived): what ``TaskRef.result()`` waits on."""
    return f"asynq:{{{qname}}}:fastq_done"


def flow_step_key(qname: str, task_id: str) -> str:
    """fastq's template of a workflow step not created yet (a chain's later step), kept under the
    queue the step will run in; the step's previous step creates it and deletes this key."""
    return f"asynq:{{{qname}}}:fastq_step:{task_id}"


def flow_links_key(qname: str) -> str:
    """fastq's workflow links of a queue: a hash of task ID -> link (what follows that step), read
    by the dequeue script only when it exists (one EXISTS per batch when no workflow is in use)."""
    return f"asynq:{{{qname}}}:fastq_flow"


def chord_key(qname: str, callback_id: str) -> str:
    """fastq's record of a chord (members done/total, results, callback templates), named by its
    callback's task ID and queue."""
    return f"asynq:{{{qname}}}:fastq_chord:{callback_id}"


def server_info_key(host: str, pid: int, server_id: str) -> str:
    return f"asynq:servers:{{{host}:{pid}:{server_id}}}"


def workers_key(host: str, pid: int, server_id: str) -> str:
    return f"asynq:workers:{{{host}:{pid}:{server_id}}}"


def scheduler_entries_key(scheduler_id: str) -> str:
    return f"asynq:schedulers:{{{scheduler_id}}}"


def scheduler_history_key(entry_id: str) -> str:
    return f"asynq:scheduler_history:{entry_id}"


def scheduler_tick_key(guard: str, tick: int) -> str:
    """fastq's per-tick guard of a periodic entry (not an Asynq key; Go never reads it).

    ``guard`` is a hash of the entry's schedule, task and options; ``tick`` the
    Unix second it was due. The first scheduler instance to ``SET NX`` it enqueues.
    """
    return f"asynq:scheduler_tick:{guard}:{tick}"


# ---------------------------------------------------------------- patterns (ACL rules, reading keys back)

ANY_KEY = PREFIX + "*"
"""Glob of every key and channel name fastq and Asynq use (ACL ``~`` / ``&`` rules)."""


def unique_key_prefix(qname: str) -> str:
    """``asynq:{<qname>}:unique:`` - the prefix of the queue's uniqueness locks (``unique_key``)."""
    return f"asynq:{{{qname}}}:unique:"


_TASK_KEY_RE = re.compile(rb"^asynq:\{[^}]*\}:t:(.+)$", re.S)


def task_id_of_key(key: str | bytes) -> str | None:
    """The task ID in a task key (``task_key``: ``asynq:{<qname>}:t:<id>``); ``None`` for any other key."""
    raw = key.encode() if isinstance(key, str) else key
    m = _TASK_KEY_RE.match(raw)
    return m.group(1).decode("utf-8", "replace") if m else None
