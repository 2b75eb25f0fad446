"""Loads the Lua scripts in ``fastq/lua`` and runs them by SHA (NOSCRIPT-safe).

Each ``<name>.lua`` gets ``_lib.lua`` prepended. ``Script.run`` (sync) and
``Script.arun`` (asyncio) send ``EVALSHA`` and, when the server answers
``NOSCRIPT`` (restart, failover, ``SCRIPT FLUSH``), load the source once and
send again. Scripts are loaded lazily, so nothing talks to Redis at import.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any, Sequence

from redis.exceptions import NoScriptError


def _read(name: str) -> str:
    return resources.files("fastq").joinpath("lua", name).read_text(encoding="utf-8")


class Script:
    __slots__ = ("name", "source", "sha")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def run(self, client: Any, keys: Sequence, args: Sequence) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def arun(self, client: Any, keys: Sequence, args: Sequence) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
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
            scripts[name[:-4]] = Script(name[:-4], lib + "\n" + entry.read_text(encoding="utf-8"))
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
