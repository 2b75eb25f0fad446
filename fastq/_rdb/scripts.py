"""The Lua scripts in ``fastq/lua``, loaded once at import (no Redis I/O).

Each ``<name>.lua`` gets ``_lib.lua`` prepended (after its ``#!lua`` line, if any). Calls send
``EVALSHA``; ``fastq._rdb.calls`` loads a script when the server answers ``NOSCRIPT`` (restart,
failover, ``SCRIPT FLUSH``) and sends the call again.

Scripts that settle tasks start with ``#!lua flags=allow-oom``: under ``maxmemory`` with
``noeviction`` they must still run, since acknowledging tasks is what frees memory. Redis < 7 does
not know the shebang; the first load error that says so switches every script to its plain form.

To add a script: write ``fastq/lua/<name>.lua`` (keys as ``KEYS``, never built from names inside
the script, so it stays valid on Redis Cluster), name it below, and call it through
``fastq._rdb.calls.script``.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any, Sequence

from fastq._rdb.calls import aexecute, execute, script


def _read(name: str) -> str:
    return resources.files("fastq").joinpath("lua").joinpath(name).read_text(encoding="utf-8")


class Script:
    __slots__ = ("name", "_flagged", "_plain")

    # Set once a server rejects shebang lines (Redis < 7): use the plain sources.
    plain_only = False

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self._flagged = (source, hashlib.sha1(source.encode("utf-8")).hexdigest())
        if source.startswith("#!"):
            plain = source.split("\n", 1)[1]
            self._plain = (plain, hashlib.sha1(plain.encode("utf-8")).hexdigest())
        else:
            self._plain = self._flagged

    @property
    def source(self) -> str:
        return self._plain[0] if Script.plain_only else self._flagged[0]

    @property
    def sha(self) -> str:
        return self._plain[1] if Script.plain_only else self._flagged[1]

    @staticmethod
    def load_refused(error: Exception) -> bool:
        """A SCRIPT LOAD error: True when it is an old server refusing the shebang (every script
        switches to its plain source: load again), False for any other error (raise it)."""
        if not Script.plain_only and "shebang" in str(error).lower():
            Script.plain_only = True
            return True
        return False

    def run(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run this script on a sync client (one call of ``fastq._rdb.calls.execute``)."""
        return execute(client, [script(self, keys, args)])[0]

    async def arun(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``run`` for redis.asyncio clients."""
        return (await aexecute(client, [script(self, keys, args)]))[0]

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


def _load_all() -> dict[str, Script]:
    lib = _read("_lib.lua")
    scripts = {}
    for entry in resources.files("fastq").joinpath("lua").iterdir():
        name = entry.name
        if name.endswith(".lua") and not name.startswith("_"):
            body = entry.read_text(encoding="utf-8")
            shebang = ""
            if body.startswith("#!"):
                shebang, body = body.split("\n", 1)
                shebang += "\n"
            scripts[name[:-4]] = Script(name[:-4], shebang + lib + "\n" + body)
    return scripts


SCRIPTS = _load_all()

ENQUEUE = SCRIPTS["enqueue"]
ENQUEUE_BATCH = SCRIPTS["enqueue_batch"]
ENQUEUE_UNIQUE = SCRIPTS["enqueue_unique"]
SCHEDULE = SCRIPTS["schedule"]
SCHEDULE_BATCH = SCRIPTS["schedule_batch"]
SCHEDULE_UNIQUE = SCRIPTS["schedule_unique"]
ADD_TO_GROUP = SCRIPTS["add_to_group"]
DEQUEUE = SCRIPTS["dequeue"]
DONE = SCRIPTS["done"]
COMPLETE = SCRIPTS["complete"]
RETRY = SCRIPTS["retry"]
ARCHIVE = SCRIPTS["archive"]
REQUEUE = SCRIPTS["requeue"]
FORWARD = SCRIPTS["forward"]
EXTEND_LEASE = SCRIPTS["extend_lease"]
WRITE_SERVER_STATE = SCRIPTS["write_server_state"]
LIST_LEASE_EXPIRED = SCRIPTS["list_lease_expired"]
LIST_CLAIMS = SCRIPTS["list_claims"]
WRITE_RESULT = SCRIPTS["write_result"]
JANITOR = SCRIPTS["janitor"]
LIMIT_ADMIT = SCRIPTS["limit_admit"]
LIMIT_RELEASE = SCRIPTS["limit_release"]
LIMIT_EXTEND = SCRIPTS["limit_extend"]
AGGREGATION_CHECK = SCRIPTS["aggregation_check"]
READ_AGGREGATION_SET = SCRIPTS["read_aggregation_set"]
FINISH_AGGREGATION = SCRIPTS["finish_aggregation"]
RECLAIM_AGGREGATION_SETS = SCRIPTS["reclaim_aggregation_sets"]
FLOW_START = SCRIPTS["flow_start"]
FLOW_DONE = SCRIPTS["flow_done"]
FLOW_FAIL = SCRIPTS["flow_fail"]
