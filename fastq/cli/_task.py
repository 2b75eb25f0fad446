"""``fastq task ls|inspect|cancel|delete|archive|run`` (with ``--all`` bulk forms)."""
from __future__ import annotations

from typing import Any, Callable

import click

from fastq.cli._base import Ctx, cli
from fastq.cli._output import (
    all_task_rows,
    emit_json,
    err_console,
    printable,
    say,
    table,
    task_rows,
    to_dict,
    when,
)
from fastq.errors import QueueNotFoundError, TaskNotFoundError
from fastq.inspect._common import ARCHIVE_ALL_STATES, DELETE_ALL_STATES, LIST_STATES, MAX_PAGE_SIZE, RUN_ALL_STATES

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
queue_option = click.option("--queue", "-q", required=True, help="Queue of the task(s).")


@cli.group()
def task() -> None:
    """Inspect and manage tasks."""


@task.command("ls")
@queue_option
@click.option("--state", "-s", type=click.Choice(LIST_STATES),
              help="State of the tasks to list (default: every state, one page of each).")
@click.option("--group", "-g", help="Group (required for --state aggregating; without --state: only this group's "
                                    "aggregating tasks).")
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True,
              help="Page number, from 1 (without --state: of each state).")
@click.option("--size", type=click.IntRange(1, MAX_PAGE_SIZE), default=30, show_default=True,
              help="Page size (without --state: of each state).")
@json_option
@click.pass_obj
def task_ls(ctx: Ctx, queue: str, state: str | None, group: str | None, page: int, size: int,
            as_json: bool) -> None:
    """List one page of tasks (of each state without --state); pending and active pages run oldest
    first, like Go's CLI."""
    if state is None:
        tasks = _all_states(ctx, queue, group, page, size)
    else:
        tasks = ctx.inspector.list_tasks(queue, state, page, size, group)
    if as_json:
        emit_json([to_dict(t) for t in tasks])
    elif not tasks:
        where = f"group {group!r} of queue {queue!r}" if group else f"queue {queue!r}"
        say(f"No {state or ''}{' ' if state else ''}tasks in {where}" + (f" on page {page}" if page > 1 else ""))
    else:
        headers, rows = task_rows(state, tasks) if state else all_task_rows(tasks)
        table(headers, rows)


def _all_states(ctx: Ctx, queue: str, group: str | None, page: int, size: int) -> list[Any]:
    """One page of each state, in the order of LIST_STATES; aggregating tasks of every group
    (or of ``group``)."""
    ins = ctx.inspector
    tasks: list[Any] = []
    for state in LIST_STATES:
        if state != "aggregating":
            tasks += ins.list_tasks(queue, state, page, size)
            continue
        names = [group] if group else [g.group for g in ins.groups(queue)]
        for name in names:
            tasks += ins.list_tasks(queue, state, page, size, name)
    return tasks


id_option = click.option("--id", "-i", "task_id", help="ID of the task.")


@task.command("inspect")
@queue_option
@click.option("--id", "-i", "task_id", required=True, help="ID of the task.")
@json_option
@click.pass_obj
def task_inspect(ctx: Ctx, queue: str, task_id: str, as_json: bool) -> None:
    """Show everything about one task."""
    t = ctx.inspector.get_task_info(queue, task_id)
    if as_json:
        emit_json(to_dict(t))
        return
    lines = [
        f"Queue:     {t.queue}", f"ID:        {t.id}", f"Type:      {t.type}", f"State:     {t.state.value}",
        f"Retried:   {t.retried}/{t.max_retry}", f"Next process time: {when(t.next_process_at)}",
        f"Timeout:   {int(t.timeout)}s" if t.timeout else "Timeout:   -",
        f"Deadline:  {when(t.deadline)}", f"Retention: {int(t.retention)}s",
    ]
    if t.group:
        lines.append(f"Group:     {t.group}")
    if t.completed_at:
        lines.append(f"Completed: {when(t.completed_at)}")
    if t.last_err:
        lines += [f"Failed at: {when(t.last_failed_at)}", f"Error:     {t.last_err}"]
    if t.is_orphaned:
        lines.append("Orphaned:  yes (its lease has expired)")
    for k, v in sorted(t.headers.items()):
        lines.append(f"Header:    {k}={v}")
    lines.append(f"Payload:   {printable(t.payload, None)}")
    if t.result is not None:
        lines.append(f"Result:    {printable(t.result, None)}")
    say("\n".join(lines))


def _find_task(ctx: Ctx, task_id: str, queue: str | None) -> Any:
    """The task's info from ``queue``, or from whichever queue holds it; None when none does."""
    for name in [queue] if queue else ctx.inspector.queues():
        try:
            return ctx.inspector.get_task_info(name, task_id)
        except TaskNotFoundError:
            continue
    return None


@task.command("cancel")
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--queue", "-q", help="Queue of the task(s) (default: look in every queue).")
@click.pass_obj
def task_cancel(ctx: Ctx, task_ids: tuple[str, ...], queue: str | None) -> None:
    """Ask the workers running TASK_IDS to cancel them (PUBLISH asynq:cancel).

    Only running (active) tasks can be cancelled: a task in another state, or not found, is an
    error (exit code 1) and gets no signal; the other TASK_IDS are still cancelled.
    """
    if queue is not None and queue not in ctx.inspector.queues():
        raise QueueNotFoundError(queue)
    failed = 0
    for tid in task_ids:
        info = _find_task(ctx, tid, queue)
        problem = None
        if info is None:
            problem = f"task {tid} not found " + (f"in queue {queue!r}" if queue else "in any queue")
        elif info.state.value != "active":
            problem = f"task {tid} is not running (state: {info.state.value}); nothing to cancel"
        if problem is not None:
            click.echo(f"Error: {problem}", err=True)
            failed += 1
            continue
        n = ctx.inspector.cancel_processing(tid)
        say(f"Sent cancelation signal for task {tid} in queue {info.queue!r} "
            f"({n} listening worker process{'es' if n != 1 else ''})")
    if failed:
        raise SystemExit(1)


def _progress_runner(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A rich progress bar on stderr when it is a terminal; a no-op otherwise."""
    con = err_console()
    if not con.is_terminal:
        return (lambda done, total: None), (lambda: None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=con, transient=True)
    job = bar.add_task(label, total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(job, completed=done, total=total)
    return update, bar.stop


def _single_or_all(ctx: Ctx, verb: str, queue: str, task_id: str | None, all_: bool, state: str | None,
                   group: str | None, allowed: tuple[str, ...], single: Callable[[str, str], Any],
                   bulk: Callable[..., int]) -> None:
    if all_:
        if task_id is not None:
            raise click.UsageError("give either --id or --all, not both")
        if state is None:
            raise click.UsageError(f"--all needs --state (one of: {', '.join(allowed)})")
        if state not in allowed:
            raise click.BadParameter(f"{state!r} is not one of {', '.join(allowed)}", param_hint="'--state'")
        update, stop = _progress_runner(f"{verb} {state} tasks")
        try:
            n = bulk(queue, state, group, progress=update)
        finally:
            stop()
        say(f"{n} task{'s' if n != 1 else ''} {verb}")
        return
    if task_id is None:
        raise click.UsageError("give --id ID, or --all with --state")
    if state is not None or group is not None:
        raise click.UsageError("--state and --group go with --all only")
    single(queue, task_id)
    say(f"Task {task_id} {verb}")


def _bulk_command(name: str, verb: str, allowed: tuple[str, ...], single_attr: str, bulk_attr: str,
                  doc: str) -> click.Command:
    @task.command(name, help=doc)
    @queue_option
    @id_option
    @click.option("--all", "all_", is_flag=True, help="Act on every task in --state.")
    @click.option("--state", "-s", help=f"With --all: one of {', '.join(allowed)}.")
    @click.option("--group", "-g", help="With --all --state aggregating: the group.")
    @click.pass_obj
    def command(ctx: Ctx, queue: str, task_id: str | None, all_: bool, state: str | None, group: str | None) -> None:
        ins = ctx.inspector
        _single_or_all(ctx, verb, queue, task_id, all_, state, group, allowed,
                       getattr(ins, single_attr), getattr(ins, bulk_attr))
    return command


_bulk_command("delete", "deleted", DELETE_ALL_STATES, "delete_task", "delete_all_tasks",
              "Delete a task (--id), or every task in a state (--all --state).")
_bulk_command("archive", "archived", ARCHIVE_ALL_STATES, "archive_task", "archive_all_tasks",
              "Archive a task (--id), or every task in a state (--all --state).")
_bulk_command("run", "moved to pending", RUN_ALL_STATES, "run_task", "run_all_tasks",
              "Run a task now (--id), or every task in a state (--all --state).")
task.add_command(task.commands["delete"], "rm")
task.add_command(task_ls, "list")
