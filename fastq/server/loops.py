"""Supervision of a worker's background loops.

Every long-running loop of a worker (fetch, ack, deadlines, heartbeat, forwarder, recoverer,
janitor, aggregator, pub/sub) handles the Redis errors it expects itself. Anything else is a
bug or a condition nobody planned for, and before this module it ended the loop silently while
the rest of the worker went on: a worker that heartbeats as healthy but no longer fetches.

``supervise`` runs a loop and, when it raises unexpectedly:

* logs the failure once with its traceback (later failures of the same episode get one line);
* restarts it after a back-off (0.1 s doubling up to 5 s, with jitter);
* when it failed ``MAX_FAILURES`` times without ever running ``HEALTHY_AFTER`` seconds in between,
  gives up: calls ``on_fatal(name, exc)``, which makes the worker stop and exit non-zero, so the
  supervisor replaces the process (and recovers its tasks at once).

A loop that returns normally (its stop event was set) is not restarted.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Awaitable, Callable, Optional

log = logging.getLogger("fastq.worker")

MAX_FAILURES = 5  # consecutive failures (each within HEALTHY_AFTER of the restart) before giving up
HEALTHY_AFTER = 60.0  # a loop that ran this long since its last restart starts a new episode
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


async def supervise(name: str, factory: Callable[[], Awaitable[Any]],
                    on_fatal: Optional[Callable[[str, BaseException], None]] = None,
                    max_failures: int = MAX_FAILURES, healthy_after: float = HEALTHY_AFTER,
                    backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX) -> None:
    """Run ``factory()`` until it returns; restart it with back-off when it raises (see module doc)."""
    failures = 0
    delay = backoff_min
    while True:
        started = time.monotonic()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the point of this module
            if time.monotonic() - started >= healthy_after:
                failures, delay = 0, backoff_min
            failures += 1
            if failures == 1:
                log.exception("%s loop failed unexpectedly; restarting it in %.1fs", name, delay)
            else:
                log.error("%s loop failed again (%d in a row): %r; restarting it in %.1fs", name, failures, exc,
                          delay)
            if failures >= max_failures:
                log.critical("%s loop keeps failing (%d times in a row); stopping this worker so that it is "
                             "replaced", name, failures)
                if on_fatal is not None:
                    on_fatal(name, exc)
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, backoff_max)
