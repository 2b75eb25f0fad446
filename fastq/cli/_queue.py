"""``fastq queue ls|inspect|history|pause|unpause|rm`` and ``fastq group ls``."""
from __future__ import annotations

from typing import Any, Callable

import click

from fastq.cli._base import Ctx, cli
from fastq.cli._output import emit_json, say, table, to_dict
from fastq.errors import FastqError, QueueNotFoundError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@cli.group()
def queue() -> None:
    """Manage queues."""


def _existing(ctx: Ctx, names: tuple[str, ...]) -> None:
    """Check every queue first, so a typo changes nothing."""
    known = set(ctx.inspector.queues())
    for name in names:
        if name not in known:
            raise QueueNotFoundError(name)


@queue.command("ls")
@json_option
@click.pass_obj
def queue_ls(ctx: Ctx, as_json: bool) -> None:
    """List the queues (names in asynq:queues)."""
    names = ctx.inspector.queues()
    if as_json:
        emit_json(names)
    elif not names:
        say("No queues")
    else:
        for name in names:
            say(name)


def _rate(processed: int, failed: int) -> str:
    return "N/A" if processed == 0 else f"{failed / processed * 100:.2f}%"


@queue.command("inspect")
@click.argument("queues", nargs=-1, required=True)
@json_option
@click.pass_obj
def queue_inspect(ctx: Ctx, queues: tuple[str, ...], as_json: bool) -> None:
    """Show size, counts by state, today's stats, latency and memory of QUEUES."""
    infos = ctx.inspector.get_queue_infos(list(queues))
    if as_json:
        emit_json([to_dict(i) for i in infos])
        return
    for n, info in enumerate(infos):
        if n:
            say("")
        say(f"Queue:   {info.queue}\nSize:    {info.size}\nGroups:  {info.groups}\nPaused:  {info.paused}\n"
            f"Latency: {info.latency:.3f}s\nMemory:  {info.memory_usage} bytes (sampled estimate)\n")
        table(["active", "pending", "aggregating", "scheduled", "retry", "archived", "completed"],
              [[info.active, info.pending, info.aggregating, info.scheduled, info.retry, info.archived,
                info.completed]], title="Task Count by State")
        say("")
        table(["processed", "failed", "error rate", "processed (all time)", "failed (all time)"],
              [[info.processed, info.failed, _rate(info.processed, info.failed), info.processed_total,
                info.failed_total]], title=f"Daily Stats {info.timestamp:%Y-%m-%d} UTC")


@queue.command("history")
@click.argument("queues", nargs=-1, required=True)
@click.option("--days", "-x", type=click.IntRange(1, 3650), default=10, show_default=True,
              help="Number of days (UTC), today first.")
@json_option
@click.pass_obj
def queue_history(ctx: Ctx, queues: tuple[str, ...], days: int, as_json: bool) -> None:
    """Processed and failed counts per day."""
    _existing(ctx, queues)
    result = {q: ctx.inspector.history(q, days) for q in queues}
    if as_json:
        emit_json({q: [to_dict(s) for s in stats] for q, stats in result.items()})
        return
    for n, (q, stats) in enumerate(result.items()):
        if n:
            say("")
        table(["date (UTC)", "processed", "failed", "error rate"],
              [[s.date.isoformat(), s.processed, s.failed, _rate(s.processed, s.failed)] for s in stats],
              title=f"Queue: {q}")


def _each(ctx: Ctx, queues: tuple[str, ...], action: Callable[[str], Any], done: str) -> None:
    """Run ``action`` on each queue (all checked first); report each; fail if any failed."""
    _existing(ctx, queues)
    failed = 0
    for q in queues:
        try:
            action(q)
        except FastqError as exc:
            click.echo(f"Error: {exc}", err=True)
            failed += 1
            continue
        say(f"{done} queue {q!r}")
    if failed:
        raise SystemExit(1)


@queue.command("pause")
@click.argument("queues", nargs=-1, required=True)
@click.pass_obj
def queue_pause(ctx: Ctx, queues: tuple[str, ...]) -> None:
    """Stop workers (fastq and Go) from taking tasks of QUEUES."""
    _each(ctx, queues, ctx.inspector.pause_queue, "Paused")


@queue.command("unpause")
@click.argument("queues", nargs=-1, required=True)
@click.pass_obj
def queue_unpause(ctx: Ctx, queues: tuple[str, ...]) -> None:
    """Let workers take tasks of QUEUES again."""
    _each(ctx, queues, ctx.inspector.unpause_queue, "Unpaused")


queue.add_command(queue_unpause, "resume")
queue.add_command(queue_ls, "list")


@queue.command("rm")
@click.argument("queues", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True,
              help="Also delete the queue's pending, scheduled, retry and archived tasks.")
@click.pass_obj
def queue_rm(ctx: Ctx, queues: tuple[str, ...], force: bool) -> None:
    """Remove QUEUES (empty ones unless --force; never with active tasks)."""
    _each(ctx, queues, lambda q: ctx.inspector.delete_queue(q, force), "Removed")


@cli.group()
def group() -> None:
    """Inspect aggregation groups."""


@group.command("ls")
@click.option("--queue", "-q", required=True, help="Queue whose groups to list.")
@json_option
@click.pass_obj
def group_ls(ctx: Ctx, queue: str, as_json: bool) -> None:
    """List the groups of a queue with their sizes."""
    groups = ctx.inspector.groups(queue)
    if as_json:
        emit_json([to_dict(g) for g in groups])
    elif not groups:
        say(f"No groups in queue {queue!r}")
    else:
        table(["Group", "Size"], [[g.group, g.size] for g in groups])


group.add_command(group_ls, "list")
