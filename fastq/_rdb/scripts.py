"""The Lua scripts in ``fastq/lua``, listed at import (no Redis I/O; sources read when needed).

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
from typing import Any, Optional, Sequence

from fastq._rdb.calls import aexecute, execute, script


def _read(name: str) -> str:
    return resources.files("fastq").joinpath("lua").joinpath(name).read_text(encoding="utf-8")


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class Script:
    """One script of ``fastq/lua``. Only its name is held from import on: its SHA1s are computed at
    first use, and its source is read from the package when Redis needs it (``SCRIPT LOAD``, at a
    worker's start and on ``NOSCRIPT``), so a process does not keep 50 copies of ``_lib.lua``."""

    __slots__ = ("name", "_shas")

    # Set once a server rejects shebang lines (Redis < 7): use the plain sources.
    plain_only = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._shas: Optional[tuple[str, str]] = None  # (flagged, plain), once computed

    def _sources(self) -> tuple[str, str]:
        """The flagged source (``_lib.lua`` after the ``#!lua`` line, if any, then the body) and the
        plain one (without that line)."""
        body = _read(self.name + ".lua")
        shebang = ""
        if body.startswith("#!"):
            shebang, body = body.split("\n", 1)
            shebang += "\n"
        plain = _read("_lib.lua") + "\n" + body
        return shebang + plain, plain

    @property
    def source(self) -> str:
        flagged, plain = self._sources()
        return plain if Script.plain_only else flagged

    @property
    def sha(self) -> str:
        shas = self._shas
        if shas is None:
            flagged, plain = self._sources()
            shas = self._shas = (_sha1(flagged), _sha1(plain))
        return shas[1] if Script.plain_only else shas[0]

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
    names = (entry.name for entry in resources.files("fastq").joinpath("lua").iterdir())
    return {name[:-4]: Script(name[:-4]) for name in sorted(names)
            if name.endswith(".lua") and not name.startswith("_")}


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
FLOW_GONE = SCRIPTS["flow_gone"]
