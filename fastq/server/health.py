"""Redis reachability as the worker sees it: one line when it is lost, one when it is back.

Every loop that talks to Redis reports failures and successes here instead of logging each
failed retry: a 15 s outage gives an ERROR "Redis unreachable" and a WARNING "reachable again
after 15.2 s" instead of a storm of warnings (langfuse #15855). Hooks get ``redis_error`` for
every failure and ``redis_restored(operation, seconds_down)`` once it is back. A full Redis
(``maxmemory`` reached with ``noeviction``) is its own state: "Redis is full" once per episode.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from redis.exceptions import OutOfMemoryError, ResponseError

log = logging.getLogger("fastq.worker")


def is_full(exc: BaseException) -> bool:
    """True for Redis's refusal of a write at ``maxmemory`` with ``noeviction`` (``-OOM ...``)."""
    return isinstance(exc, OutOfMemoryError) or (isinstance(exc, ResponseError) and str(exc).startswith("OOM"))


class RedisHealth:
    """Reachability and fullness of Redis, as the loops of one worker see them.

    Not thread-safe: one instance per event loop (a thread gets its own)."""

    def __init__(self, call_hooks: Optional[Callable[..., None]] = None) -> None:
        self._call_hooks = call_hooks
        self.down_since: Optional[float] = None
        self.failures = 0
        # A full Redis answers, so it is not "unreachable": reads and the settling scripts (which
        # free memory) still work while other writes are refused. One ERROR when the first write
        # is refused, one WARNING once every operation refused since then has succeeded again.
        self.full_since: Optional[float] = None
        self.full_ops: set[str] = set()

    def failed(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        if self._call_hooks is not None:
            self._call_hooks("redis_error", operation, exc)
        if is_full(exc):
            if self.down_since is not None:
                self.ok(operation)  # it answered: reachable again, but full
            if self.full_since is None:
                self.full_since = time.monotonic()
                log.error("Redis is full (maxmemory): %s was refused (%s). Running tasks keep being settled, "
                          "which frees memory; new writes fail until memory is freed or maxmemory raised",
                          operation, exc)
            else:
                log.debug("%s refused again: Redis is full", operation)
            self.full_ops.add(operation)
            return
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("Redis unreachable (%s failed: %s); retrying with back-off", operation, exc)
        else:
            log.debug("%s failed again: %s", operation, exc)

    def ok(self, operation: str) -> None:
        if self.full_ops and operation in self.full_ops:
            self.full_ops.discard(operation)
            if not self.full_ops:
                seconds = time.monotonic() - (self.full_since or time.monotonic())
                self.full_since = None
                log.warning("Redis accepts writes again after %.1fs (%s)", seconds, operation)
        if self.down_since is None:
            return
        seconds = time.monotonic() - self.down_since
        self.down_since = None
        log.warning("Redis reachable again after %.1fs (%s)", seconds, operation)
        if self._call_hooks is not None:
            self._call_hooks("redis_restored", operation, seconds)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    @property
    def troubled(self) -> bool:
        """Down or full: loops report their successes (cheap to test on hot paths)."""
        return self.down_since is not None or bool(self.full_ops)


def noop_health() -> Any:
    return RedisHealth(None)
