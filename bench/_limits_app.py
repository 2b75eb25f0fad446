"""The Apps of ``bench/limits.py``: one no-op task type, "bench:noop", served three ways."""
from __future__ import annotations

import fastq

plain = fastq.App()  # no limits at all: the baseline
rated = fastq.App()  # the same type with a rate limit far above what the box can do
slotted = fastq.App()  # ... or a concurrency limit far above the workers' slots


@plain.task(name="bench:noop", queue="bench-limits")
async def noop_plain() -> None:
    return None


@rated.task(name="bench:noop", queue="bench-limits", rate_limit="1000000/s")
async def noop_rated() -> None:
    return None


@slotted.task(name="bench:noop", queue="bench-limits", concurrency_limit=100000)
async def noop_slotted() -> None:
    return None
