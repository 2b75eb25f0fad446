"""Logging integration: the running task's ID on every log line.

``TaskContextFilter`` adds ``task_id``, ``task_type``, ``queue`` and ``retry``
to each record it sees: the running task's values inside a handler (also in the
thread a sync handler runs in, since fastq runs it in the task's context) and
``"-"`` elsewhere. Values passed with ``extra=`` are left alone. Filters on a
*handler* see every record that handler emits, whatever logger it came from,
so ``install()`` puts the filter on the root logger's handlers; ``setup()`` is
what ``fastq-supervisor`` uses: a stream handler with ``TextFormatter`` and
``DEFAULT_FORMAT``, or ``JsonFormatter`` with ``--log-format json``.

Task types, queue names and error texts come from whoever enqueues or from
handlers; neither format lets a newline or another control character in them
start a line of its own (a forged log record): ``TextFormatter`` escapes them,
``JsonFormatter`` writes them as JSON escapes.

Threads a handler starts itself see the task only when they run in a copy of
its context: ``contextvars.copy_context().run(fn)`` or ``asyncio.to_thread``
(a bare ``threading.Thread`` starts with an empty context, as in any Python).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from typing import Any, Optional

from fastq.context import current_task

__all__ = ["TaskContextFilter", "JsonFormatter", "TextFormatter", "install", "setup", "add_task_context", "lifecycle",
           "TaskLog", "DEFAULT_FORMAT", "LOG_FORMATS"]

DEFAULT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s task=%(task_id)s: %(message)s"
LOG_FORMATS = ("text", "json")
_TASK_FIELDS = ("task_id", "task_type", "queue", "retry")


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


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime",
                                                                                  "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with structlog's key names.

    Keys: ``timestamp`` (ISO 8601, UTC, milliseconds), ``level`` (lower case), ``logger``,
    ``event`` (the message), ``pid``; inside a task ``task_id``, ``task_type``, ``queue``
    and ``retry`` (left out elsewhere); ``exception`` (the formatted traceback) when the
    record has ``exc_info``; ``stack`` for ``stack_info``; then every ``extra=`` field
    (values JSON cannot hold are written with ``str()``).
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
        }
        d = record.__dict__
        ctx = current_task()
        if d.get("task_id", "-") != "-":  # set by TaskContextFilter (maybe in another thread) or extra=
            for key in _TASK_FIELDS:
                if key in d:
                    out[key] = d[key]
        elif ctx is not None:
            out.update(task_id=ctx.task_id, task_type=ctx.type, queue=ctx.queue, retry=ctx.retry_count)
        for key, value in d.items():
            if key not in _STANDARD and key not in out and key not in _TASK_FIELDS:
                out[key] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        text = json.dumps(out, default=str, ensure_ascii=False)
        # json escapes C0 controls; with ensure_ascii=False it leaves DEL, C1 controls (NEL U+0085 ends a
        # line for str.splitlines()) and U+2028/U+2029 raw. They can only stand inside JSON strings: \\uXXXX.
        if _JSON_RAW.search(text) is None:
            return text
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# C0 controls (newline, carriage return, tab, ESC...), DEL, C1 controls (NEL U+0085, CSI U+009B...) and the
# Unicode line and paragraph separators: anything a terminal acts on or str.splitlines() breaks a line at.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: "re.Match[str]") -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    return f"\\x{ord(c):02x}" if ord(c) <= 0xFF else f"\\u{ord(c):04x}"


def escape_controls(text: str) -> str:
    """``text`` with control characters escaped: ``\\n``, ``\\r``, ``\\t``, others ``\\xNN`` (``\\u2028``)."""
    if text.isprintable():  # the common case, and the cheapest scan (no control is printable)
        return text
    return _CONTROL.sub(_escape_char, text)


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` that keeps each record on one line: control characters in the formatted
    line (message, task type, queue, any field of the format) are escaped, ``\\n`` for a newline,
    ``\\xNN`` for other C0/C1 controls. A traceback (``exc_info``) still follows on its own lines,
    with the exception's text escaped the same way; backslashes are written as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        try:
            te = traceback.TracebackException(*ei, compact=True)
            _escape_exception_texts(te, set())
            text = "".join(te.format())
        except Exception:  # a private attribute gone in some Python: the standard traceback
            return super().formatException(ei)
        return text[:-1] if text.endswith("\n") else text


def _escape_exception_texts(te: traceback.TracebackException, seen: set[int]) -> None:
    """Escape the exception text of ``te`` and its chain, so the traceback's last line stays one line."""
    if id(te) in seen:
        return
    seen.add(id(te))
    te._str = escape_controls(te._str)  # type: ignore[attr-defined]
    for other in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())):
        if other is not None:
            _escape_exception_texts(other, seen)


def _iso_utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def add_task_context(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: adds the running task's ``task_id``, ``task_type``, ``queue``
    and ``retry`` to the event dict (nothing outside a handler; keys already there win).

    ``structlog.configure(processors=[fastq.logging.add_task_context, ...])``
    """
    ctx = current_task()
    if ctx is not None:
        event_dict.setdefault("task_id", ctx.task_id)
        event_dict.setdefault("task_type", ctx.type)
        event_dict.setdefault("queue", ctx.queue)
        event_dict.setdefault("retry", ctx.retry_count)
    return event_dict


def lifecycle(event: str, **fields: Any) -> dict[str, Any]:
    """``extra=`` for a supervisor/worker life-cycle log line: JSON logs get ``lifecycle``
    (e.g. ``"child_died"``) and the given fields (``child_pid``, ``exit_code``, ``signal``...)
    as keys, so they can be queried without parsing the message."""
    return {"lifecycle": event, **fields}


class TaskLog:
    """A worker hook (``WorkerConfig(log_tasks=True)``, ``fastq-supervisor --log-tasks``): one INFO
    line per finished task on the ``fastq.tasks`` logger, with its outcome and duration, e.g.
    ``task 5f0c... (email:send) done in 12.4 ms``. JSON logs also get ``outcome`` and
    ``duration_ms`` as keys. Off by default: at 100k tasks/s a line per task is the costliest part."""

    def __init__(self) -> None:
        self.log = logging.getLogger("fastq.tasks")

    def task_finished(self, ctx: Any, outcome: str, exc: Optional[BaseException], seconds: float) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        ms = seconds * 1000
        extra = {"task_id": ctx.task_id, "task_type": ctx.type, "queue": ctx.queue, "retry": ctx.retry_count,
                 "outcome": outcome, "duration_ms": round(ms, 3)}
        if exc is None:
            self.log.info("task %s (%s) %s in %.1f ms", ctx.task_id, ctx.type, outcome, ms, extra=extra)
        else:
            self.log.info("task %s (%s) %s in %.1f ms: %s: %s", ctx.task_id, ctx.type, outcome, ms,
                          type(exc).__name__, exc, extra=extra)


def install(logger: logging.Logger | None = None) -> None:
    """Attach a TaskContextFilter to every handler of ``logger`` (default: root); idempotent."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, TaskContextFilter) for f in handler.filters):
            handler.addFilter(TaskContextFilter())


def setup(level: int | str = logging.INFO, fmt: str = DEFAULT_FORMAT, log_format: Optional[str] = None) -> None:
    """Log to stderr with the task ID on every line (used by fastq-supervisor).

    ``log_format="json"`` writes one JSON object per line (``JsonFormatter``) instead of
    ``fmt``. Does nothing to the handlers if the root logger has some already.
    """
    if log_format is not None and log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(fmt))
        root.addHandler(handler)
    root.setLevel(level)
    install(root)
