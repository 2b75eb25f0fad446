"""Redis Cluster clients whose pipelines accept the script calls fastq batches (one slot per queue)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import ClusterError, RedisClusterException, SlotNotCoveredError

from fastq.redis._compat import cluster_nodes, extend, node_client, set_node_connection_class
from fastq.redis.errors import ClusterUnavailableError, TLSHandshakeError

# ---------------------------------------------------------------- Redis Cluster

_CLUSTER_ERRORS = (RedisClusterException, ClusterError)


def _translate(exc: BaseException) -> BaseException:
    text = str(exc)
    if isinstance(exc, ClusterError) and "TTL exhausted" in text:
        return ClusterUnavailableError("Redis Cluster kept redirecting or refusing the command (a slot is migrating "
                                       "or failing over; TTL exhausted): retry it, with the same task_id for "
                                       "an enqueue")
    if "TLS handshake with" in text:  # every node refused our TLS: say so, not "unavailable"
        return TLSHandshakeError(text[text.index("TLS handshake with"):])
    if isinstance(exc, SlotNotCoveredError) or "cannot be connected" in text or "No targets" in text:
        return ClusterUnavailableError(f"Redis Cluster unavailable: {text}")
    return exc


class _ClusterPipelineFixes:
    """What fastq needs from a cluster pipeline that redis-py refuses: EVALSHA (routed by its
    keys, like any keyed command), SCRIPT LOAD (sent to every primary), MGET of one slot and
    DEL of several keys (one DEL per key)."""

    if TYPE_CHECKING:  # given by redis-py's pipeline class, which follows this mixin
        _fastq_client: Any

        def execute_command(self, *args: Any, **kwargs: Any) -> Any: ...

        def __len__(self) -> int: ...

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if int(numkeys) < 1:
            raise RedisClusterException("fastq: a script call on Redis Cluster needs at least one key")
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def mget(self, keys: Any, *args: Any) -> Any:
        names = list(keys) if isinstance(keys, (list, tuple)) else [keys]
        names += list(args)
        return self.execute_command("MGET", *names)

    def script_load(self, script: str) -> _ClusterPipelineFixes:
        loads: list[tuple[int, str]] = self.__dict__.setdefault("_fastq_loads", [])
        loads.append((self._fastq_position(), script))
        return self

    def delete(self, *names: Any) -> _ClusterPipelineFixes:
        merged: list[tuple[int, int]] = self.__dict__.setdefault("_fastq_merges", [])
        start = self._fastq_position()
        for name in names:
            self.execute_command("DEL", name)
        merged.append((start, len(names)))
        return self

    def _fastq_position(self) -> int:
        """Index in the caller's reply list of the next queued call."""
        loads: list[tuple[int, str]] = self.__dict__.get("_fastq_loads", [])
        merges: list[tuple[int, int]] = self.__dict__.get("_fastq_merges", [])
        return len(self) + len(loads) - sum(n - 1 for _, n in merges)

    def _fastq_merge(self, replies: list[Any], loaded: list[tuple[int, Any]]) -> list[Any]:
        merges: list[tuple[int, int]] = self.__dict__.pop("_fastq_merges", [])
        out: list[Any] = []
        i = 0
        pending = sorted(merges)
        for start, n in pending:  # fold each split DEL back into one reply (the number deleted)
            while len(out) < start and i < len(replies):
                out.append(replies[i])
                i += 1
            part = replies[i:i + n]
            i += n
            errors = [r for r in part if isinstance(r, Exception)]
            out.append(errors[0] if errors else sum(int(r) for r in part))
        out += replies[i:]
        for position, sha in loaded:
            out.insert(position, sha)
        return out


class _SyncClusterPipeline(_ClusterPipelineFixes):
    def execute(self, raise_on_error: bool = True) -> list[Any]:
        loads: list[tuple[int, str]] = self.__dict__.pop("_fastq_loads", [])
        try:
            loaded = [(pos, self._fastq_client.script_load(src)) for pos, src in loads]
            # a mixin: redis-py's ClusterPipeline follows it in the MRO (mypy cannot know)
            replies = super().execute(raise_on_error=raise_on_error) if len(self) else []  # type: ignore[misc]
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc
        return self._fastq_merge(list(replies), loaded)


class _AsyncClusterPipeline(_ClusterPipelineFixes):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        loads: list[tuple[int, str]] = self.__dict__.pop("_fastq_loads", [])
        try:
            loaded = [(pos, await self._fastq_client.script_load(src)) for pos, src in loads]
            if len(self):  # a mixin: redis-py's ClusterPipeline follows it in the MRO (mypy cannot know)
                replies = await super().execute(raise_on_error, allow_redirections)  # type: ignore[misc]
            else:
                replies = []
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc
        return self._fastq_merge(list(replies), loaded)


class AsyncRedisCluster(redis.asyncio.cluster.RedisCluster):
    """redis-py's asyncio ``RedisCluster`` with fastq's connection class (TLS, hiredis packing),
    pipelines that accept script calls, and transient cluster errors as ``ClusterUnavailableError``
    (a ``redis.ConnectionError``) so that fastq's retry loops handle them."""

    _fastq_connection_class: Any = None

    def __init__(self, *args: Any, connection_class: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if connection_class is not None:
            self._fastq_connection_class = connection_class
            set_node_connection_class(self, connection_class)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc

    async def initialize(self, *args: Any, **kwargs: Any) -> AsyncRedisCluster:
        try:
            await super().initialize(*args, **kwargs)
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc
        return self

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        return extend(super().pipeline(transaction, shard_hint), _AsyncClusterPipeline, _fastq_client=self)

    def plain_node_client(self, index: int = 0) -> redis.asyncio.Redis:
        """A plain client to one node (for pub/sub: PUBLISH reaches every node of a cluster).
        ``index`` rotates over the known nodes, so a retry after a failure picks another."""
        primaries = cluster_nodes(self, primaries=True)
        return node_client(primaries[index % len(primaries)])


class SyncRedisCluster(redis.cluster.RedisCluster):
    """redis-py's ``RedisCluster``, created lazily (redis-py's connects in its constructor; fastq
    connects at the first command, like every other client), with the same fixes as
    ``AsyncRedisCluster``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401 - deferred
        self.__dict__["_fastq_init"] = (args, kwargs)

    def _fastq_ready(self) -> None:
        init = self.__dict__.pop("_fastq_init", None)
        if init is not None:
            args, kwargs = init
            try:
                super().__init__(*args, **kwargs)
            except _CLUSTER_ERRORS as exc:
                self.__dict__["_fastq_init"] = init  # try again at the next use
                raise _translate(exc) from exc

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_fastq") or "_fastq_init" not in self.__dict__:
            raise AttributeError(name)
        self._fastq_ready()
        return getattr(self, name)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self._fastq_ready()
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated in redis-py
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        self._fastq_ready()
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]  # unannotated in redis-py
        return extend(pipe, _SyncClusterPipeline, _fastq_client=self)

    def close(self) -> None:
        if "_fastq_init" in self.__dict__:
            return  # never connected
        super().close()

    def __del__(self) -> None:
        if "_fastq_init" not in self.__dict__:
            try:
                super().close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __repr__(self) -> str:
        return f"<fastq SyncRedisCluster {'(not connected)' if '_fastq_init' in self.__dict__ else ''}>"


def is_cluster(client: Any) -> bool:
    """True for a Redis Cluster client (every script call must stay within one queue's slot)."""
    return isinstance(client, (redis.asyncio.cluster.RedisCluster, redis.cluster.RedisCluster))
