"""Redis reachability as the worker sees it: one line when it is lost, one when it is back.

Every loop that talks to Redis reports failures and successes here instead of logging each
failed retry: a 15 s outage gives an ERROR "Redis unreachable" and a WARNING "reachable again
after 15.2 s" instead of a storm of warnings (langfuse #15855). Hooks get ``redis_error`` for
every failure and ``redis_restored(operation, seconds_down)`` once it is back.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

log = logging.getLogger("fastq.worker")


class RedisHealth:
    def __init__(self, call_hooks: Optional[Callable[..., None]] = None) -> None:
        self._call_hooks = call_hooks
        self.down_since: Optional[float] = None
        self.failures = 0

    def failed(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        if self._call_hooks is not None:
            self._call_hooks("redis_error", operation, exc)
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("Redis unreachable (%s failed: %s); retrying with back-off", operation, exc)
        else:
            log.debug("%s failed again: %s", operation, exc)

    def ok(self, operation: str) -> None:
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


def noop_health() -> Any:
    return RedisHealth(None)
