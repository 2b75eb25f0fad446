"""What the worker's upkeep loops share.

The loops themselves: ``forwarder`` (due scheduled and retry tasks to pending), ``recoverer``
(tasks whose lease expired), ``janitor`` (completed tasks past their retention), ``subscriber``
(cancellations and wake-ups over pub/sub), and ``aggregator`` (task groups). Several workers
doing the same upkeep never conflict: every move is one atomic script, and a task already moved
by another worker is simply not found.
"""
from __future__ import annotations

import asyncio

__all__ = ["sleep_until_set"]


async def sleep_until_set(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass
