"""``durability="replicated"``: script calls (enqueues) wait for replicas to acknowledge (``WAIT``)
and raise ``NotReplicatedError`` when they did not in time."""
from __future__ import annotations

import re
from typing import Any

from fastq.redis.errors import NotReplicatedError

_class_cache: dict = {}

# ---------------------------------------------------------------- durability (WAIT)

_TASK_KEY_RE = re.compile(rb"^asynq:\{[^}]*\}:t:(.+)$", re.S)


def _task_ids(keys_and_args: tuple, numkeys: Any) -> list[str]:
    try:
        n = int(numkeys)
    except (TypeError, ValueError):
        return []
    out = []
    for key in keys_and_args[:n]:
        raw = key.encode() if isinstance(key, str) else key
        if isinstance(raw, bytes):
            m = _TASK_KEY_RE.match(raw)
            if m:
                out.append(m.group(1).decode("utf-8", "replace"))
    return out


def _check_replicated(replies: list, acked: Any, wait: tuple, ids_by_call: dict) -> None:
    """Raise ``NotReplicatedError`` when a call that ran (no error reply) was not replicated in time.
    Calls answered with an error (NOSCRIPT...) wrote nothing: their callers handle them and the
    retried call waits again."""
    if isinstance(acked, Exception):
        raise acked
    replicas, timeout = wait
    if int(acked) >= replicas:
        return
    ran = [i for i, reply in enumerate(replies) if not isinstance(reply, Exception)]
    if ran:
        raise NotReplicatedError(int(acked), replicas, timeout, [t for i in ran for t in ids_by_call.get(i, [])])


class _WaitPipelineBase:
    _fastq_wait: tuple

    def evalsha(self, sha, numkeys, *keys_and_args):  # type: ignore[no-untyped-def]
        ids = self.__dict__.setdefault("_fastq_ids", {})
        ids[len(self.command_stack)] = _task_ids(keys_and_args, numkeys)
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def _fastq_finish(self, replies: list, ids: dict, raise_on_error: bool) -> list:
        acked = replies.pop()
        _check_replicated(replies, acked, self._fastq_wait, ids)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies


class _SyncWait:
    """``WAIT replicas timeout`` after every script call and pipeline, on the same connection."""

    _fastq_wait: tuple  # (replicas, timeout seconds)

    def evalsha(self, sha, numkeys, *keys_and_args):  # type: ignore[no-untyped-def]
        pipe = self.pipeline(transaction=False)
        pipe.evalsha(sha, numkeys, *keys_and_args)
        return pipe.execute(raise_on_error=True)[0]

    def pipeline(self, transaction=True, shard_hint=None):  # type: ignore[no-untyped-def]
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[misc]
        if not transaction:
            pipe.__class__ = _sync_wait_pipeline(type(pipe))
            pipe._fastq_wait = self._fastq_wait
        return pipe


class _SyncWaitPipeline(_WaitPipelineBase):
    def execute(self, raise_on_error=True):  # type: ignore[no-untyped-def]
        if not self.command_stack:
            return []
        ids = self.__dict__.pop("_fastq_ids", {})
        replicas, timeout = self._fastq_wait
        self.execute_command("WAIT", replicas, int(timeout * 1000))
        replies = super().execute(raise_on_error=False)  # type: ignore[misc]
        return self._fastq_finish(list(replies), ids, raise_on_error)


class _AsyncWait:
    _fastq_wait: tuple

    async def evalsha(self, sha, numkeys, *keys_and_args):  # type: ignore[no-untyped-def]
        pipe = self.pipeline(transaction=False)
        pipe.evalsha(sha, numkeys, *keys_and_args)
        return (await pipe.execute(raise_on_error=True))[0]

    def pipeline(self, transaction=True, shard_hint=None):  # type: ignore[no-untyped-def]
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[misc]
        if not transaction:
            pipe.__class__ = _async_wait_pipeline(type(pipe))
            pipe._fastq_wait = self._fastq_wait
        return pipe


class _AsyncWaitPipeline(_WaitPipelineBase):
    async def execute(self, raise_on_error=True):  # type: ignore[no-untyped-def]
        if not self.command_stack:
            return []
        ids = self.__dict__.pop("_fastq_ids", {})
        replicas, timeout = self._fastq_wait
        self.execute_command("WAIT", replicas, int(timeout * 1000))
        replies = await super().execute(raise_on_error=False)  # type: ignore[misc]
        return self._fastq_finish(list(replies), ids, raise_on_error)


def _sync_wait_pipeline(base: type) -> type:
    key = ("sync-wait-pipe", base)
    if key not in _class_cache:
        _class_cache[key] = type(f"Durable{base.__name__}", (_SyncWaitPipeline, base), {})
    return _class_cache[key]


def _async_wait_pipeline(base: type) -> type:
    key = ("async-wait-pipe", base)
    if key not in _class_cache:
        _class_cache[key] = type(f"Durable{base.__name__}", (_AsyncWaitPipeline, base), {})
    return _class_cache[key]
