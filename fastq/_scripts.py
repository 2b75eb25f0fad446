"""Old name of ``fastq._rdb.scripts`` (kept while callers move to ``fastq._rdb``)."""
from typing import Any, Sequence

from fastq._rdb.calls import Call, aexecute, execute, script
from fastq._rdb.scripts import *  # noqa: F403
from fastq._rdb.scripts import SCRIPTS, Script  # noqa: F401


def run_many(client: Any, calls: Sequence[tuple[Any, Any, Any]]) -> list[Any]:
    return execute(client, [c if isinstance(c, Call) else script(*c) for c in calls])


async def arun_many(client: Any, calls: Sequence[tuple[Any, Any, Any]]) -> list[Any]:
    return await aexecute(client, [c if isinstance(c, Call) else script(*c) for c in calls])
