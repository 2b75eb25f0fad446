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

# Exit codes of a worker process (fastq.server.worker), named by the supervisor when it reaps one.
EXIT_LOOP_FAILED = 3  # a background loop kept failing
EXIT_FATAL_REDIS = 4  # Redis refused the worker at start (credentials, ACL, TLS, unknown host)
EXIT_REASONS = {EXIT_LOOP_FAILED: "a background loop kept failing",
                EXIT_FATAL_REDIS: "Redis refused the worker; see its log line"}

MAX_FAILURES = 5  # consecutive failures (each within HEALTHY_AFTER of the restart) before giving up
HEALTHY_AFTER = 60.0  # a loop that ran this long since its last restart starts a new episode
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


async def supervise(name: str, factory: Callable[[], Awaitable[Any]],
                    on_fatal: Optional[Callable[[str, BaseException], None]] = None,
                    max_failures: Optional[int] = None, healthy_after: Optional[float] = None,
                    backoff_min: Optional[float] = None, backoff_max: Optional[float] = None,
                    stop: Optional[asyncio.Event] = None, logger: logging.Logger = log) -> None:
    """Run ``factory()`` until it returns; restart it with back-off when it raises (see module doc).

    The bounds default to this module's constants, read at each call. ``stop``: when set during a
    back-off, return instead of restarting. ``logger``: where the failures are logged."""
    max_failures = MAX_FAILURES if max_failures is None else max_failures
    healthy_after = HEALTHY_AFTER if healthy_after is None else healthy_after
    backoff_min = BACKOFF_MIN if backoff_min is None else backoff_min
    backoff_max = BACKOFF_MAX if backoff_max is None else backoff_max
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
                logger.exception("%s loop failed unexpectedly; restarting it in %.1fs", name, delay)
            else:
                logger.error("%s loop failed again (%d in a row): %r; restarting it in %.1fs", name, failures, exc,
                             delay)
            if failures >= max_failures:
                logger.critical("%s loop keeps failing (%d times in a row); giving up on it", name, failures)
                if on_fatal is not None:
                    on_fatal(name, exc)
                return
            pause = delay * (0.5 + random.random())
            if stop is None:
                await asyncio.sleep(pause)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                    return
                except asyncio.TimeoutError:
                    pass
            delay = min(delay * 2, backoff_max)


async def jittered_sleep(seconds: float) -> None:
    """Back-off sleep with +-50 % jitter, so many workers do not retry in lockstep."""
    await asyncio.sleep(seconds * (0.5 + random.random()))
