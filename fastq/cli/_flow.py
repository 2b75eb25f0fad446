"""``fastq chord inspect``: a chord's progress (members done/total, state)."""
from __future__ import annotations

import click

from fastq.cli._base import Ctx, cli
from fastq.cli._output import emit_json, say, to_dict


@cli.group()
def chord() -> None:
    """Inspect chords (fastq.chord workflows)."""


@chord.command("inspect")
@click.option("--queue", "-q", required=True, help="Queue of the chord's callback.")
@click.option("--id", "-i", "chord_id", required=True, help="ID of the chord (its callback's task ID).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def chord_inspect(ctx: Ctx, queue: str, chord_id: str, as_json: bool) -> None:
    """Show how many members of a chord have succeeded, and its state."""
    info = ctx.inspector.get_chord(queue, chord_id)
    if as_json:
        emit_json(to_dict(info))
        return
    lines = [f"Chord:     {info.id}", f"Queue:     {info.queue}", f"Members:   {info.done}/{info.total} done",
             f"State:     {info.state}"]
    if info.failed_member:
        lines.append(f"Failed:    {info.failed_member}")
    if info.error:
        lines.append(f"Error:     {info.error}")
    say("\n".join(lines))
