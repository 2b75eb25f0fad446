"""Logging integration: the running task's ID on every log line.

``TaskContextFilter`` adds ``task_id``, ``task_type``, ``queue`` and ``retry``
to each record it sees: the running task's values inside a handler (also in the
thread a sync handler runs in, since fastq runs it in the task's context) and
``"-"`` elsewhere. Values passed with ``extra=`` are left alone. Filters on a
*handler* see every record that handler emits, whatever logger it came from,
so ``install()`` puts the filter on the root logger's handlers; ``setup()`` is
what ``fastq-supervisor`` uses: a stream handler with ``DEFAULT_FORMAT``.
"""
from __future__ import annotations

import logging
import sys

from fastq.context import current_task

__all__ = ["TaskContextFilter", "install", "setup", "DEFAULT_FORMAT"]

DEFAULT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s task=%(task_id)s: %(message)s"


class TaskContextFilter(logging.Filter):
    """Adds ``task_id``, ``task_type``, ``queue`` and ``retry`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current_task()
        d = record.__dict__
        if ctx is None:
            d.setdefault("task_id", "-")
            d.setdefault("task_type", "-")
            d.setdefault("queue", "-")
            d.setdefault("retry", "-")
        else:
            d.setdefault("task_id", ctx.task_id)
            d.setdefault("task_type", ctx.type)
            d.setdefault("queue", ctx.queue)
            d.setdefault("retry", ctx.retry_count)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Attach a TaskContextFilter to every handler of ``logger`` (default: root); idempotent."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, TaskContextFilter) for f in handler.filters):
            handler.addFilter(TaskContextFilter())


def setup(level: int | str = logging.INFO, fmt: str = DEFAULT_FORMAT) -> None:
    """Log to stderr with the task ID on every line (used by fastq-supervisor)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    root.setLevel(level)
    install(root)
