"""Rendering for the ``fastq`` CLI: rich tables for people, JSON for scripts.

Payloads and results are opaque bytes: tables show them as text when they are
printable UTF-8 (shortened), JSON gives ``payload`` (text or null) and ``payload_hex``.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import sys
from datetime import date, datetime, timezone
from typing import Any, Iterable

import click
from rich.console import Console
from rich.table import Table

from fastq.task import TaskInfo


def console() -> Console:
    """A console on stdout; wide when not a terminal so tables are not squeezed in pipes."""
    out = sys.stdout
    tty = out.isatty()
    return Console(file=out, width=None if tty else 200, highlight=False, soft_wrap=False,
                   no_color=not tty, emoji=False)


def err_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


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
    con = console()
    if title:
        con.print(title, style="bold", markup=False)
    t = Table(*headers, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        t.add_row(*(str(v) for v in row))
    con.print(t)


def say(text: str) -> None:
    console().print(text, markup=False)


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


def to_dict(obj: Any) -> dict:
    """A dataclass as JSON-ready dict; each bytes field ``x`` also gets ``x_hex``."""
    out: dict = {}
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
