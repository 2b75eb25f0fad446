"""``fastq stats``, ``server ls``, ``cron ls|history``, ``check`` and ``enqueue``."""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import click

from fastq.cli._base import Ctx, cli
from fastq.cli._output import emit_json, printable, say, table, to_dict, when
from fastq.errors import InvalidOptionError
from fastq.inspect._common import MAX_PAGE_SIZE

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


@cli.command()
@json_option
@click.pass_obj
def stats(ctx: Ctx, as_json: bool) -> None:
    """Task counts by state and by queue, today's stats and Redis info."""
    infos = ctx.inspector.get_queue_infos()
    states = ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed")
    totals = {s: sum(getattr(i, s) for i in infos) for s in states + ("processed", "failed")}
    info = ctx.inspector.redis_info()
    redis_info = {
        "version": info.get("redis_version"), "uptime_in_days": info.get("uptime_in_days"),
        "connected_clients": info.get("connected_clients"), "used_memory_human": info.get("used_memory_human"),
        "used_memory_peak_human": info.get("used_memory_peak_human"),
    }
    now = datetime.now(timezone.utc)
    if as_json:
        emit_json({"aggregate": {**totals, "timestamp": now}, "queues": [to_dict(i) for i in infos],
                   "redis": redis_info})
        return
    table(states, [[totals[s] for s in states]], title="Task Count by State")
    say("")
    if infos:
        table([i.queue + (" (paused)" if i.paused else "") for i in infos], [[i.size for i in infos]],
              title="Task Count by Queue")
    else:
        say("No queues")
    say("")
    p, f = totals["processed"], totals["failed"]
    table(["processed", "failed", "error rate"], [[p, f, "N/A" if p == 0 else f"{f / p * 100:.2f}%"]],
          title=f"Daily Stats {now:%Y-%m-%d} UTC")
    say("")
    table(["version", "uptime", "connections", "memory usage", "peak memory usage"],
          [[redis_info["version"], f"{redis_info['uptime_in_days']} days", redis_info["connected_clients"],
            f"{redis_info['used_memory_human']}B", f"{redis_info['used_memory_peak_human']}B"]],
          title="Redis Info")


@cli.group()
def server() -> None:
    """Inspect worker servers."""


@server.command("ls")
@json_option
@click.pass_obj
def server_ls(ctx: Ctx, as_json: bool) -> None:
    """List live servers (fastq worker processes and Go servers)."""
    servers = ctx.inspector.servers()
    if as_json:
        emit_json([to_dict(s) for s in servers])
    elif not servers:
        say("No running servers")
    else:
        table(["Host", "PID", "State", "Active Workers", "Queues", "Started"],
              [[s.host, s.pid, s.status, f"{len(s.active_workers)}/{s.concurrency}",
                ", ".join(f"{q}:{p}" for q, p in sorted(s.queues.items())), when(s.started)] for s in servers])


@cli.group()
def cron() -> None:
    """Inspect periodic (cron) entries."""


@cron.command("ls")
@json_option
@click.pass_obj
def cron_ls(ctx: Ctx, as_json: bool) -> None:
    """List the registered periodic entries."""
    entries = ctx.inspector.scheduler_entries()
    if as_json:
        emit_json([to_dict(e) for e in entries])
    elif not entries:
        say("No scheduler entries")
    else:
        table(["EntryID", "Spec", "Type", "Payload", "Options", "Next", "Prev"],
              [[e.id, e.spec, e.task_type, printable(e.task_payload), ", ".join(e.options),
                when(e.next_enqueue_at), when(e.prev_enqueue_at)] for e in entries])


server.add_command(server_ls, "list")
cron.add_command(cron_ls, "list")


@cron.command("history")
@click.argument("entry_ids", nargs=-1, required=True)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True,
              help="Page number, from 1 (of each entry's events).")
@click.option("--size", type=click.IntRange(1, MAX_PAGE_SIZE), default=30, show_default=True,
              help="Events per page.")
@json_option
@click.pass_obj
def cron_history(ctx: Ctx, entry_ids: tuple[str, ...], page: int, size: int, as_json: bool) -> None:
    """Enqueue events of periodic entries, newest first."""
    result = {e: ctx.inspector.list_scheduler_enqueue_events(e, page, size) for e in entry_ids}
    if as_json:
        emit_json({e: [to_dict(ev) for ev in evs] for e, evs in result.items()})
        return
    for n, (entry, events) in enumerate(result.items()):
        if n:
            say("")
        if not events:
            say(f"No enqueue events for entry {entry}")
            continue
        table(["TaskID", "EnqueuedAt"], [[ev.task_id, when(ev.enqueued_at)] for ev in events],
              title=f"Entry: {entry}")


@cli.command()
@click.option("--queue", "-q", help="Also require this queue to exist.")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=5.0, show_default=True,
              help="Seconds to wait for Redis.")
@click.pass_obj
def check(ctx: Ctx, queue: str | None, timeout: float) -> None:
    """Liveness probe: exit 0 when Redis answers and runs a script (and QUEUE exists)."""
    ctx.timeout = timeout
    started = time.perf_counter()
    ctx.inspector.check(queue)
    took = (time.perf_counter() - started) * 1000
    say(f"OK: Redis ran a script in {took:.1f} ms" + (f"; queue {queue!r} exists" if queue else ""))


# ---------------------------------------------------------------- enqueue

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``1.5`` or a Go duration such as ``1m30s`` / ``2h`` / ``500ms``."""
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        pos, value = 0, 0.0
        if not s:
            raise ValueError("empty duration") from None
        while pos < len(s):
            m = _GO_PART.match(s, pos)
            if m is None:
                raise ValueError(f"{text!r} is not a duration (use seconds, or e.g. 90s, 1m30s, 2h)") from None
            value += float(m.group(1)) * _GO_UNITS[m.group(2)]
            pos = m.end()
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError(f"{text!r} is not a duration of zero or more seconds")
    return value


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click stubs
    name = "DURATION"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Timestamp(click.ParamType):  # type: ignore[type-arg]
    name = "TIME"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, datetime):
            return value
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not an RFC 3339 time such as 2026-01-02T15:04:05Z", param, ctx)
        if t.tzinfo is None:
            self.fail(f"{value!r} has no timezone; add Z or an offset such as +02:00", param, ctx)
        return t


@cli.command()
@click.argument("task_type", metavar="TYPE")
@click.argument("payload")
@click.option("--queue", "-q", default="default", show_default=True, help="Queue to put the task in.")
@click.option("--max-retry", type=click.IntRange(0, 2**31 - 1), help="Retries before archiving (default 25).")
@click.option("--timeout", type=Duration(), help="Per-attempt time limit: seconds or 1m30s (default 30m).")
@click.option("--deadline", type=Timestamp(), help="Absolute deadline, RFC 3339.")
@click.option("--process-in", type=Duration(), help="Run after this delay.")
@click.option("--process-at", type=Timestamp(), help="Run at this time, RFC 3339.")
@click.option("--unique", type=Duration(), help="Refuse duplicates (same type+payload) for this long.")
@click.option("--retention", type=Duration(), help="Keep the finished task this long.")
@click.option("--group", "-g", help="Aggregation group.")
@click.option("--task-id", "--id", "task_id", help="Task ID (default: a random UUID).")
@json_option
@click.pass_obj
def enqueue(ctx: Ctx, task_type: str, payload: str, queue: str, max_retry: int | None, timeout: float | None,
            deadline: datetime | None, process_in: float | None, process_at: datetime | None,
            unique: float | None, retention: float | None, group: str | None, task_id: str | None,
            as_json: bool) -> None:
    """Enqueue a task of TYPE with PAYLOAD (text, stored as UTF-8 bytes)."""
    from fastq.task import Task

    try:
        t = Task(task_type, payload.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(str(exc)) from None
    options = {"queue": queue, "max_retry": max_retry, "timeout": timeout, "deadline": deadline,
               "process_in": process_in, "process_at": process_at, "unique": unique, "retention": retention,
               "group": group, "task_id": task_id}
    info = ctx.client.enqueue(t, **{k: v for k, v in options.items() if v is not None})
    if as_json:
        emit_json(to_dict(info))
    else:
        say(f"Enqueued task {info.id} to queue {info.queue!r} ({info.state.value})")
