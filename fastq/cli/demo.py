"""``fastq-demo``: enqueue many tasks, drain them with fastq-supervisor, print throughput.

Redis: ``--redis-url`` / ``$FASTQ_REDIS_URL`` when given; otherwise a private
redis-server started for the demo when one is installed; otherwise a private
embedded Valkey when the ``[embedded]`` extra is installed; otherwise the one on
127.0.0.1:6379 if it answers. The demo itself is ``fastq.demo``.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import click

from fastq.cli._script import CONTEXT, Fail, run, version_option
from fastq.cli._types import IntAtLeast

__all__ = ["command", "main"]

PROG = "fastq-demo"


@click.command(PROG, context_settings=CONTEXT, params=[version_option(PROG)],
               help="Enqueue many tasks, drain them with fastq-supervisor, print throughput.")
@click.option("--tasks", type=IntAtLeast(0), default=100_000, metavar="N",
              help="no-op tasks to enqueue (default 100000)")
@click.option("--processes", type=IntAtLeast(1), default=2, metavar="N", help="worker processes (default 2)")
@click.option("--concurrency", type=IntAtLeast(1), default=100, metavar="N",
              help="tasks at once per process (default 100)")
@click.option("--redis-url", default=None, metavar="URL",
              help="use this Redis instead of a private one (default: $FASTQ_REDIS_URL when set and not empty); "
                   "not with --embedded")
@click.option("--embedded", is_flag=True,
              help="use a private embedded Valkey (the [embedded] extra) even if redis-server is installed; "
                   "not with --redis-url")
def command(tasks: int, processes: int, concurrency: int, redis_url: Optional[str], embedded: bool) -> int:
    if embedded and redis_url is not None:
        raise Fail("--embedded is not allowed with --redis-url: give one of them", 2)
    from fastq.demo import run as run_demo

    return run_demo(tasks, processes, concurrency, redis_url, embedded=embedded)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``fastq-demo`` console script."""
    return run(command, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
