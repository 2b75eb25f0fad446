"""Loads the Lua scripts in ``fastq/lua`` and runs them by SHA (NOSCRIPT-safe).

Each ``<name>.lua`` gets ``_lib.lua`` prepended (after its ``#!lua`` line, if
any). ``Script.run`` (sync) and ``Script.arun`` (asyncio) send ``EVALSHA`` and,
when the server answers ``NOSCRIPT`` (restart, failover, ``SCRIPT FLUSH``), load
the source once and send again. Scripts are loaded lazily, so nothing talks to
Redis at import.

Scripts that settle tasks start with ``#!lua flags=allow-oom``: under
``maxmemory`` with ``noeviction`` they must still run, since acknowledging
tasks is what frees memory. Redis < 7 does not know the shebang; the first
load error that says so switches every script to its plain form.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any, Sequence

from redis.exceptions import NoScriptError, ResponseError


def _read(name: str) -> str:
    return resources.files("fastq").joinpath("lua", name).read_text(encoding="utf-8")


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

    def _loaded(self, error: Exception) -> None:
        """React to a SCRIPT LOAD error: fall back to plain sources on an old server."""
        if not Script.plain_only and "shebang" in str(error).lower():
            Script.plain_only = True
            return
        raise error

    def load(self, client: Any) -> None:
        try:
            client.script_load(self.source)
        except ResponseError as exc:
            self._loaded(exc)
            client.script_load(self.source)

    async def aload(self, client: Any) -> None:
        try:
            await client.script_load(self.source)
        except ResponseError as exc:
            self._loaded(exc)
            await client.script_load(self.source)

    def run(self, client: Any, keys: Sequence, args: Sequence) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.load(client)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def arun(self, client: Any, keys: Sequence, args: Sequence) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.aload(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


Call = tuple  # (Script, keys, args)


def run_many(client: Any, calls: Sequence[Call]) -> list:
    """Run script calls in one round trip (a non-transactional pipeline); reload after NOSCRIPT."""
    if len(calls) == 1:
        script, k, a = calls[0]
        return [script.run(client, k, a)]
    pipe = client.pipeline(transaction=False)
    for script, k, a in calls:
        pipe.evalsha(script.sha, len(k), *k, *a)
    replies = pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            script, k, a = calls[i]
            replies[i] = script.run(client, k, a)
    return _raise_first_error(replies)


async def arun_many(client: Any, calls: Sequence[Call]) -> list:
    """``run_many`` for redis.asyncio clients."""
    if len(calls) == 1:
        script, k, a = calls[0]
        return [await script.arun(client, k, a)]
    pipe = client.pipeline(transaction=False)
    for script, k, a in calls:
        pipe.evalsha(script.sha, len(k), *k, *a)
    replies = await pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            script, k, a = calls[i]
            replies[i] = await script.arun(client, k, a)
    return _raise_first_error(replies)


def _raise_first_error(replies: list) -> list:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


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
AGGREGATION_CHECK = SCRIPTS["aggregation_check"]
READ_AGGREGATION_SET = SCRIPTS["read_aggregation_set"]
FINISH_AGGREGATION = SCRIPTS["finish_aggregation"]
RECLAIM_AGGREGATION_SETS = SCRIPTS["reclaim_aggregation_sets"]
