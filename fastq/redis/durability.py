"""``durability="replicated"``: script calls (enqueues) wait for replicas to acknowledge (``WAIT``)
and raise ``NotReplicatedError`` when they did not in time."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from fastq.keys import task_id_of_key
from fastq.redis._compat import extend
from fastq.redis.errors import NotReplicatedError

if TYPE_CHECKING:
    _SyncRedis = redis.Redis
    _AsyncRedis = redis.asyncio.Redis
    _SyncPipeline = redis.client.Pipeline
    _AsyncPipeline = redis.asyncio.client.Pipeline
else:
    _SyncRedis = _AsyncRedis = _SyncPipeline = _AsyncPipeline = object

Wait = tuple[int, float]  # (replicas, timeout seconds)
Key = Union[str, bytes]

# ---------------------------------------------------------------- durability (WAIT)


def _task_ids(keys_and_args: tuple[Any, ...], numkeys: Any) -> list[str]:
    try:
        n = int(numkeys)
    except (TypeError, ValueError):
        return []
    out = []
    for key in keys_and_args[:n]:
        task_id = task_id_of_key(key) if isinstance(key, (str, bytes)) else None
        if task_id is not None:
            out.append(task_id)
    return out


def _check_replicated(replies: list[Any], acked: Any, wait: Wait, ids_by_call: dict[int, list[str]]) -> None:
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


def _finish(replies: list[Any], wait: Wait, ids: dict[int, list[str]], raise_on_error: bool) -> list[Any]:
    acked = replies.pop()
    _check_replicated(replies, acked, wait, ids)
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


def _note_task_ids(pipe: Any, keys_and_args: tuple[Any, ...], numkeys: Any) -> None:
    """Remember which tasks the next queued call of ``pipe`` writes."""
    pipe.__dict__.setdefault("_fastq_ids", {})[len(pipe)] = _task_ids(keys_and_args, numkeys)


class _SyncWait(_SyncRedis):
    """``WAIT replicas timeout`` after every script call and pipeline, on the same connection."""

    _fastq_wait: Wait

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        pipe = self.pipeline(transaction=False)
        pipe.evalsha(sha, numkeys, *keys_and_args)
        return pipe.execute(raise_on_error=True)[0]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.client.Pipeline:
        pipe = super().pipeline(transaction, shard_hint)
        if not transaction:
            extend(pipe, _SyncWaitPipeline, "Durable", _fastq_wait=self._fastq_wait)
        return pipe


class _SyncWaitPipeline(_SyncPipeline):
    # (redis-py leaves the sync Pipeline.execute_command unannotated: the ignores below)
    _fastq_wait: Wait

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        _note_task_ids(self, keys_and_args, numkeys)
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)  # type: ignore[no-untyped-call]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if len(self) == 0:
            return []
        ids = self.__dict__.pop("_fastq_ids", {})
        replicas, timeout = self._fastq_wait
        self.execute_command("WAIT", replicas, int(timeout * 1000))  # type: ignore[no-untyped-call]
        replies = super().execute(raise_on_error=False)
        return _finish(list(replies), self._fastq_wait, ids, raise_on_error)


class _AsyncWait(_AsyncRedis):
    _fastq_wait: Wait

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        pipe = self.pipeline(transaction=False)
        pipe.evalsha(sha, numkeys, *keys_and_args)
        return (await pipe.execute(raise_on_error=True))[0]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.asyncio.client.Pipeline:
        pipe = super().pipeline(transaction, shard_hint)
        if not transaction:
            extend(pipe, _AsyncWaitPipeline, "Durable", _fastq_wait=self._fastq_wait)
        return pipe


class _AsyncWaitPipeline(_AsyncPipeline):
    _fastq_wait: Wait

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        _note_task_ids(self, keys_and_args, numkeys)
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if len(self) == 0:
            return []
        ids = self.__dict__.pop("_fastq_ids", {})
        replicas, timeout = self._fastq_wait
        self.execute_command("WAIT", replicas, int(timeout * 1000))
        replies = await super().execute(raise_on_error=False)
        return _finish(list(replies), self._fastq_wait, ids, raise_on_error)
