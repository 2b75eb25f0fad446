"""What the Inspector returns: plain dataclasses named after Go Asynq's.

Tasks come back as ``fastq.TaskInfo``. Times are timezone-aware UTC ``datetime``s,
durations are seconds (``float``), payloads are ``bytes``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass
class QueueInfo:
    """A queue at one instant (Asynq's ``QueueInfo``).

    ``latency`` is seconds since the oldest pending task became pending (0 when none, or
    when that task carries no ``pending_since``). ``memory_usage`` is Asynq's sampled
    estimate in bytes. ``processed``/``failed`` count the current UTC day.
    """

    queue: str
    memory_usage: int
    latency: float
    size: int
    groups: int
    pending: int
    active: int
    scheduled: int
    retry: int
    archived: int
    completed: int
    aggregating: int
    processed: int
    failed: int
    processed_total: int
    failed_total: int
    paused: bool
    timestamp: datetime


@dataclass
class DailyStats:
    """Processed and failed counts of one queue on one UTC day (Asynq's ``DailyStats``)."""

    queue: str
    processed: int
    failed: int
    date: date


@dataclass
class GroupInfo:
    """An aggregation group and the number of tasks waiting in it."""

    group: str
    size: int


@dataclass
class WorkerInfo:
    """A task a server is running right now (Asynq's ``WorkerInfo``)."""

    task_id: str
    task_type: str
    task_payload: bytes
    queue: str
    started: datetime | None
    deadline: datetime | None


@dataclass
class ServerInfo:
    """A live worker server (Go ``asynq.Server`` or one fastq worker process)."""

    id: str
    host: str
    pid: int
    concurrency: int
    queues: dict[str, int]
    strict_priority: bool
    started: datetime | None
    status: str
    active_workers: list[WorkerInfo] = field(default_factory=list)


@dataclass
class SchedulerEntry:
    """A registered periodic task. ``options`` are Go's option strings, e.g. ``Queue("x")``."""

    id: str
    spec: str
    task_type: str
    task_payload: bytes
    options: list[str]
    next_enqueue_at: datetime | None
    prev_enqueue_at: datetime | None


@dataclass
class SchedulerEnqueueEvent:
    """One enqueue done by a periodic entry."""

    task_id: str
    enqueued_at: datetime | None


@dataclass
class ChordInfo:
    """A chord (``fastq.chord``) by its callback's task ID: ``done`` of ``total`` members have
    succeeded; ``state`` is ``"waiting"``, ``"done"`` (the callback was created) or ``"failed"``
    (``failed_member`` was archived; ``error`` is the callback's archive reason). The record is
    kept one day after the chord ends."""

    id: str
    queue: str
    total: int
    done: int
    state: str
    failed_member: str | None = None
    error: str | None = None
