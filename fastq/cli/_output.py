"""Rendering for the ``fastq`` CLI: rich tables for people, JSON for scripts.

Payloads and results are opaque bytes: tables show them as text when they are
printable UTF-8 (shortened), JSON gives ``payload`` (text or null) and ``payload_hex``.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import os
import sys
from datetime import date, datetime, timezone
from typing import Any, Iterable

import click
from rich.console import Console
from rich.table import Table

from fastq.task import TaskInfo

ID_HEADERS = ("ID", "TaskID", "EntryID", "State")  # columns never shortened or wrapped


def console() -> Console:
    """A console on stdout; wide when not a terminal (unless $COLUMNS says otherwise) so tables
    are not squeezed in pipes."""
    out = sys.stdout
    tty = out.isatty()
    sized = tty or os.environ.get("COLUMNS", "").strip().isdigit()  # rich reads $COLUMNS, else the terminal
    return Console(file=out, width=None if sized else 200, highlight=False, soft_wrap=False,
                   no_color=not tty, emoji=False)


def err_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def announce_redis() -> None:
    """Before the first line of human output: a dim ``Redis: URL`` line on stderr naming the
    Redis the command used (password masked), once per command, when stderr is a terminal (so
    pipes, logs and ``2>&1`` captures stay as they were). JSON output never calls this."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not sys.stderr.isatty():
        return
    from fastq.cli._base import Ctx, safe_url

    state = ctx.find_object(Ctx)
    if state is None or state.announced or not state.used_redis:
        return
    state.announced = True
    err_console().print(f"Redis: {safe_url(state.url)}", style="dim", markup=False, soft_wrap=True)


def printable(data: bytes | None, limit: int | None = 40) -> str:
    """Bytes as text when printable UTF-8 (as Go's CLI shows payloads), else a short note."""
    if data is None:
        return ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes, not UTF-8>"
    if not text.isprintable():
        return f"<{len(data)} bytes, not printable>"
    if limit is not None and len(text) > limit:
        return text[:limit - 1] + "…"
    return text


def when(t: datetime | None) -> str:
    if t is None:
        return "-"
    delta = (t - datetime.now(timezone.utc)).total_seconds()
    stamp = t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if abs(delta) < 1:
        return f"{stamp} (now)"
    return f"{stamp} ({'in ' if delta > 0 else ''}{_span(abs(delta))}{'' if delta > 0 else ' ago'})"


def _span(seconds: float) -> str:
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
    """A table; ID columns (``ID_HEADERS``) keep their full width, the other columns shrink: they wrap
    at spaces, and a word too long for its column is shortened with an ellipsis."""
    announce_redis()
    con = console()
    if title:
        con.print(title, style="bold", markup=False)
    cells = [[str(v) for v in row] for row in rows]
    t = Table(box=None, header_style="bold", pad_edge=False)
    for i, header in enumerate(headers):
        if header in ID_HEADERS:
            widest = max([len(header)] + [len(row[i]) for row in cells if i < len(row)])
            t.add_column(header, no_wrap=True, overflow="fold", min_width=widest)
        else:
            t.add_column(header, overflow="ellipsis")
    for row in cells:
        t.add_row(*row)
    con.print(t)


def say(text: str) -> None:
    """A line of human output (the terminal wraps it; task IDs are never cut)."""
    announce_redis()
    console().print(text, markup=False, soft_wrap=True)


# ---------------------------------------------------------------- JSON

def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return printable(value, None) if _is_text(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready dict; each bytes field ``x`` also gets ``x_hex``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = _jsonable(value)
        if isinstance(value, bytes):
            out[f"{f.name}_hex"] = value.hex()
        elif value is None and f.name in ("result",):
            out[f"{f.name}_hex"] = None
    return out


def emit_json(data: Any) -> None:
    click.echo(json.dumps(_jsonable(data), indent=2, default=str))


def task_rows(state: str, tasks: list[TaskInfo]) -> tuple[list[str], list[list[Any]]]:
    """Columns per state, as Go's ``asynq task ls`` shows them."""
    if state in ("pending",):
        return ["ID", "Type", "Payload"], [[t.id, t.type, printable(t.payload)] for t in tasks]
    if state == "active":
        return (["ID", "Type", "Payload", "Orphaned"],
                [[t.id, t.type, printable(t.payload), "yes" if t.is_orphaned else ""] for t in tasks])
    if state == "scheduled":
        return (["ID", "Type", "Payload", "Process At"],
                [[t.id, t.type, printable(t.payload), when(t.next_process_at)] for t in tasks])
    if state == "retry":
        return (["ID", "Type", "Payload", "Next Retry", "Last Error", "Last Failed", "Retried", "Max Retry"],
                [[t.id, t.type, printable(t.payload), when(t.next_process_at), printable(t.last_err.encode()),
                  when(t.last_failed_at), t.retried, t.max_retry] for t in tasks])
    if state == "archived":
        return (["ID", "Type", "Payload", "Last Failed", "Last Error"],
                [[t.id, t.type, printable(t.payload), when(t.last_failed_at), printable(t.last_err.encode())]
                 for t in tasks])
    if state == "completed":
        return (["ID", "Type", "Payload", "Completed At", "Result"],
                [[t.id, t.type, printable(t.payload), when(t.completed_at), printable(t.result)] for t in tasks])
    return (["ID", "Type", "Payload", "Group"], [[t.id, t.type, printable(t.payload), t.group] for t in tasks])


def _details(t: TaskInfo) -> str:
    """What matters about a task in its state, for the all-states listing."""
    state = t.state.value
    if state == "active":
        return "orphaned (lease expired)" if t.is_orphaned else ""
    if state == "scheduled":
        return f"at {when(t.next_process_at)}"
    if state == "retry":
        return f"retry {t.retried}/{t.max_retry} at {when(t.next_process_at)}: {printable(t.last_err.encode())}"
    if state == "archived":
        return f"failed {when(t.last_failed_at)}: {printable(t.last_err.encode())}"
    if state == "completed":
        return f"completed {when(t.completed_at)}"
    if state == "aggregating":
        return f"group {t.group}"
    return ""


def all_task_rows(tasks: list[TaskInfo]) -> tuple[list[str], list[list[Any]]]:
    """Columns for tasks of several states (``fastq task ls`` without --state)."""
    return (["ID", "State", "Type", "Payload", "Details"],
            [[t.id, t.state.value, t.type, printable(t.payload), _details(t)] for t in tasks])
