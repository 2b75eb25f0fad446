"""Run a scheduler in a process of its own: what ``fastq-scheduler`` and ``fastq-supervisor
--scheduler`` start.

``as_service`` turns an APP (a ``Scheduler``, a ``PeriodicTaskManager``, a config provider or
a ``module:attribute`` naming one) into something to serve; ``run_scheduler`` serves it until
SIGTERM (and SIGINT), a stop event or the death of the parent process.
"""
from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any, Optional, Union

from fastq.errors import AppImportError
from fastq.scheduler._service import serve_with_signals
from fastq.scheduler.periodic import PeriodicTaskManager
from fastq.scheduler.scheduler import Scheduler

__all__ = ["load_app", "as_service", "run_scheduler"]


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` and return the object; ``AppImportError`` says what went wrong."""
    from fastq._imports import load_object

    return load_object(spec, example="myapp.cron:scheduler")


def as_service(app: Any) -> Union[Scheduler, PeriodicTaskManager]:
    """A Scheduler or PeriodicTaskManager for ``app``: one of those, a provider, or a ``module:attribute``."""
    name = app if isinstance(app, str) else None
    if isinstance(app, str):
        app = load_app(app)
    if isinstance(app, (Scheduler, PeriodicTaskManager)):
        if app._state != "new":
            raise AppImportError(f"APP {name or app!r} was started already; give one that has not run")
        return app
    if callable(getattr(app, "get_configs", None)):
        return PeriodicTaskManager(app)
    raise AppImportError(f"APP {name or type(app).__name__!r} is a {type(app).__name__}, not a fastq.Scheduler, "
                         f"a fastq.PeriodicTaskManager or a config provider (an object with get_configs())")


def run_scheduler(app: Any, redis_url: Optional[str] = None, *, location: Optional[str] = None,
                  heartbeat_interval: Optional[float] = None, parent_pid: Optional[int] = None,
                  stop_event: Optional[threading.Event] = None, handle_sigint: bool = True) -> int:
    """Run a scheduler in this process until SIGTERM (and SIGINT), ``stop_event`` or the parent's death.

    ``app``: a ``Scheduler``, a ``PeriodicTaskManager``, a config provider
    (an object with ``get_configs()``), or ``"module:attribute"`` naming one.
    ``redis_url`` / ``location`` / ``heartbeat_interval`` override the app's
    own settings when given (``None`` keeps them). ``parent_pid``: stop when
    that process is gone. ``handle_sigint=False`` ignores SIGINT (a forked child
    whose supervisor owns Ctrl-C). Blocking; returns 0 after a clean stop.
    Raises ``AppImportError``, ``ConfigProviderError`` (initial sync failed),
    ``InvalidOptionError`` / ``TimeZoneError`` (bad overrides).
    """
    service = as_service(app)
    target = service.scheduler if isinstance(service, PeriodicTaskManager) else service
    target.configure(redis=redis_url, location=location, heartbeat_interval=heartbeat_interval)
    signals = (signal.SIGTERM, signal.SIGINT) if handle_sigint else (signal.SIGTERM,)
    if not handle_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve_with_signals(service, signals, parent_pid, stop_event))
    return 0
