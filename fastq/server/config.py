"""Worker configuration and the parsing of user-given values (CLI flags, kwargs)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Optional

from fastq import _validate
from fastq._validate import queue_name
from fastq.errors import InvalidOptionError
from fastq.logging import TaskLog
from fastq.redis.facade import default_url
from fastq.retry import default_retry_delay
from fastq.server.limits import TaskLimits, check_limits
from fastq.server.sync_pool import POOLS

__all__ = ["WorkerConfig", "parse_queues"]


def parse_queues(spec: Any) -> dict[str, int]:
    """Parse ``"critical=6,default=3,low=1"`` (or a dict / list of names) into ``{name: weight}``.

    A name without ``=weight`` gets weight 1. Raises ``InvalidOptionError``
    naming the bad entry for blank names, names the client would refuse to
    enqueue to (``{``, ``}``, whitespace, control characters, over 255 bytes;
    see ``fastq._validate``), non-integer or non-positive weights and duplicates.
    """
    if isinstance(spec, dict):
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in spec.items()]
    else:
        if isinstance(spec, str):
            parts = [p.strip() for p in spec.split(",")]
        else:
            parts = [str(p).strip() for p in spec]
        items = []
        for part in parts:
            if not part:
                raise InvalidOptionError(f"queues {spec!r}: empty entry (check for a stray comma)")
            name, sep, text = part.partition("=")
            items.append((name.strip(), text.strip() if sep else 1))
    queues: dict[str, int] = {}
    for name, weight in items:
        if not name.strip():
            raise InvalidOptionError(f"queues {spec!r}: queue name must not be blank")
        queue_name(name, f"queues {spec!r}: queue name")  # the rule the client enqueues by
        if isinstance(weight, str):
            try:
                weight = int(weight)
            except ValueError:
                raise InvalidOptionError(f"queues {spec!r}: weight of {name!r} must be an integer, "
                                         f"got {weight!r}") from None
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise InvalidOptionError(f"queues {spec!r}: weight of {name!r} must be an integer")
        if weight < 1:
            raise InvalidOptionError(f"queues {spec!r}: weight of {name!r} must be at least 1, got {weight}")
        if name in queues:
            raise InvalidOptionError(f"queues {spec!r}: queue {name!r} is listed twice")
        queues[name] = weight
    if not queues:
        raise InvalidOptionError("at least one queue is needed")
    return queues


def _positive(name: str, value: Any, minimum: float = 0.0, integer: bool = False) -> Any:
    return _validate.number(name, value, minimum, integer=integer, what="a number")


def _duration(name: str, value: Any) -> float:
    """Seconds from a number or a ``timedelta``; finite and not negative."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return float(_validate.number(name, value, 0, what="a number of seconds or a timedelta"))


@dataclass
class WorkerConfig:
    """Settings of one worker process (the supervisor gives each child a copy).

    Timings follow Asynq unless noted: heartbeat 5 s, lease 30 s, shutdown 8 s.
    """

    redis_url: str = field(default_factory=default_url)
    concurrency: int = 100
    queues: dict[str, int] = field(default_factory=lambda: {"default": 1})
    strict_priority: bool = False
    shutdown_timeout: float = 8.0
    # A claim's lease (seconds, by the Redis clock). Running tasks get it extended every
    # lease_duration / 4; a killed worker's tasks are recovered at most ~lease_duration + 1 s
    # after its last extension (Asynq: 30 s lease, recovered after 60-120 s).
    lease_duration: int = 8
    # How often this worker rewrites its ServerInfo/WorkerInfo (TTL twice that), as Asynq.
    heartbeat_interval: float = 5.0
    # Largest number of tasks claimed by one dequeue call.
    batch_size: int = 200
    # Longest sleep between dequeue attempts while every queue is empty. fastq's clients and
    # forwarder wake idle workers at once through a pub/sub notification, so this bounds only
    # the pickup of tasks written by other clients (e.g. Go's; unless keyspace_wakeup): back-off
    # from 1 ms up to this (Asynq sleeps 0.5-1.5 s).
    poll_interval: float = 1.0
    # Also wake idle workers through Redis keyspace notifications of the pending lists, so tasks
    # pushed by any client (Go's) start within milliseconds; sets notify-keyspace-events (adds K
    # and l) where allowed, else warns and polls. fastq.server.keyspace; off by default.
    keyspace_wakeup: bool = False
    # How often scheduled and retry tasks that are due move to pending (Asynq: 5 s).
    forward_interval: float = 1.0
    # How often this worker looks for tasks whose lease expired (Asynq: 60 s).
    recover_interval: float = 1.0
    # How long past expiry a lease must be before it is reclaimed. Leases use Redis time, so
    # no clock-skew slack is needed between fastq workers (Asynq: 30 s).
    recover_grace: float = 0.0
    # Delay before a task recovered from an expired lease runs again (counted as a failed
    # attempt; Asynq uses the normal retry delay).
    recover_retry_delay: float = 0.0
    # How often running tasks are checked against their deadline.
    deadline_check_interval: float = 0.05
    # A sync handler still running this long after its task was settled (deadline, cancel) makes
    # the worker recycle itself: the process exit is the only way to stop a stuck thread.
    hard_timeout_grace: float = 30.0
    # Where plain def handlers run (fastq.server.sync_pool): "threads", up to concurrency threads fed
    # in batches; or "inline", on the event loop thread (fastest for handlers that take microseconds;
    # one that blocks stops the loop).
    pool: str = "threads"
    # Stop (gracefully) after this many tasks so the supervisor forks a fresh process; 0 = never.
    max_tasks: int = 0
    # Stored error text is cut to this many characters.
    max_error_length: int = 4096
    retry_delay: Callable[..., float] = default_retry_delay
    is_failure: Callable[[BaseException], bool] = lambda exc: True
    error_handler: Optional[Callable[..., Any]] = None
    # Observers of task life cycles (metrics, tracing): objects with any of task_started(ctx),
    # task_finished(ctx, outcome, exception, seconds), redis_error(operation, exception),
    # redis_restored(operation, seconds_down), loop_blocked(ctx, seconds): fastq.server.hooks.Hook.
    hooks: list[Any] = field(default_factory=list)
    # How often expired completed tasks (retention) are deleted, in batches (Asynq: 8 s, 100).
    janitor_interval: float = 8.0
    janitor_batch: int = 100
    # How often the janitor looks for workflow steps whose task is gone (deleted, revoked, settled
    # by Go) and ends their workflows: a chain's later steps are dropped, a chord fails.
    flow_sweep_interval: float = 60.0
    # Called (sync or async) in each worker process before it takes tasks.
    on_start: Optional[Callable[[], Any]] = None
    # One INFO line per finished task (fastq.logging.TaskLog, added to hooks): off by default.
    log_tasks: bool = False
    host: str = field(default_factory=lambda: _hostname())
    # Set by the supervisor so it can find this worker's claims if the process dies.
    server_id: Optional[str] = None
    # Group aggregation (Asynq's GroupAggregator), see fastq/server/aggregator.py:
    # ``(group, tasks) -> Task`` or ``-> (Task, enqueue_options)``, plain or async; None = off.
    group_aggregator: Optional[Callable[..., Any]] = None
    # A group is aggregated once nothing joined it for this long (seconds, >= 1; Asynq: 1 min),
    group_grace_period: float = 60.0
    # or once its oldest task waited this long (0 = no limit),
    group_max_delay: float = 0.0
    # or as soon as it holds this many tasks (0 = no limit; also the largest set aggregated at once).
    group_max_size: int = 0
    # Fleet-wide rate and concurrency limits by task type (fastq.server.limits.TaskLimits); a
    # fastq.App fills this from @app.task(rate_limit=..., concurrency_limit=...).
    limits: dict[str, TaskLimits] = field(default_factory=dict)

    def __repr__(self) -> str:
        from dataclasses import fields

        from fastq.redis.url import redact

        shown = (f"{f.name}={redact(self.redis_url) if f.name == 'redis_url' else getattr(self, f.name)!r}"
                 for f in fields(self))
        return f"WorkerConfig({', '.join(shown)})"

    def __post_init__(self) -> None:
        if self.log_tasks and not any(isinstance(h, TaskLog) for h in self.hooks):
            self.hooks = [*self.hooks, TaskLog()]
        self.queues = parse_queues(self.queues)
        _positive("concurrency", self.concurrency, 1, integer=True)
        _positive("shutdown_timeout", self.shutdown_timeout, 0)
        _positive("lease_duration", self.lease_duration, 1, integer=True)
        _positive("heartbeat_interval", self.heartbeat_interval, 0.01)
        if self.lease_duration < 3:
            raise InvalidOptionError(f"lease_duration must be at least 3 seconds, got {self.lease_duration}")
        _positive("batch_size", self.batch_size, 1, integer=True)
        _positive("poll_interval", self.poll_interval, 0.001)
        _positive("forward_interval", self.forward_interval, 0.01)
        _positive("recover_interval", self.recover_interval, 0.01)
        _positive("recover_grace", self.recover_grace, 0)
        _positive("recover_retry_delay", self.recover_retry_delay, 0)
        _positive("max_tasks", self.max_tasks, 0, integer=True)
        _positive("hard_timeout_grace", self.hard_timeout_grace, 0)
        _positive("janitor_interval", self.janitor_interval, 0.01)
        _positive("janitor_batch", self.janitor_batch, 1, integer=True)
        _positive("flow_sweep_interval", self.flow_sweep_interval, 0.01)
        _positive("max_error_length", self.max_error_length, 16, integer=True)
        _positive("deadline_check_interval", self.deadline_check_interval, 0.001)
        if self.pool not in POOLS:
            raise InvalidOptionError(f"pool must be one of {', '.join(map(repr, POOLS))}, got {self.pool!r}")
        self._check_groups()
        self.limits = check_limits(self.limits)

    def _check_groups(self) -> None:
        if self.group_aggregator is not None and not callable(self.group_aggregator):
            raise InvalidOptionError(f"group_aggregator must be a callable (group, tasks) -> Task, "
                                     f"got {type(self.group_aggregator).__name__}")
        self.group_grace_period = _duration("group_grace_period", self.group_grace_period)
        if self.group_grace_period < 1:
            raise InvalidOptionError(f"group_grace_period must be at least 1 second (as Asynq), "
                                     f"got {self.group_grace_period!r}")
        self.group_max_delay = _duration("group_max_delay", self.group_max_delay)
        if 0 < self.group_max_delay < 1:
            raise InvalidOptionError(f"group_max_delay must be 0 (no limit) or at least 1 second "
                                     f"(group times are whole seconds), got {self.group_max_delay!r}")
        _positive("group_max_size", self.group_max_size, 0, integer=True)


def _hostname() -> str:
    try:
        import socket

        return socket.gethostname() or "unknown-host"
    except OSError:  # pragma: no cover
        return os.environ.get("HOSTNAME", "unknown-host")
