"""Sentinel master clients that also close their connections to the sentinels (the connections
that reconnect through discovery are ``fastq.redis._compat.SyncSentinelReconnect`` and its twin)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

from fastq.redis._compat import sentinel_clients

if TYPE_CHECKING:
    _SyncRedis = redis.Redis
    _AsyncRedis = redis.asyncio.Redis
else:
    _SyncRedis = _AsyncRedis = object


class _SyncSentinelOwner(_SyncRedis):
    """A Sentinel master client that also closes its connections to the sentinels."""

    _fastq_sentinel: Any = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            for s in sentinel_clients(self._fastq_sentinel):
                s.close()


class _AsyncSentinelOwner(_AsyncRedis):
    _fastq_sentinel: Any = None

    async def aclose(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().aclose(*args, **kwargs)
        finally:
            for s in sentinel_clients(self._fastq_sentinel):
                await s.aclose()
