"""Sentinel-managed connections that reconnect through discovery, and master clients that also close
their connections to the sentinels."""
from __future__ import annotations

from typing import Any


class _SyncSentinelReconnect:
    """Reconnect through Sentinel. redis-py 8.1 reconnects a dropped Sentinel-managed connection
    (``send_packed_command`` -> ``connect_check_health``) to the host it last used, bypassing
    discovery: after a failover that keeps the old master alive as a replica, every retry lands
    on it again (READONLY forever). Only ``connect_to`` (which discovery calls) connects directly."""

    _fastq_direct = False

    def connect_to(self, address):  # type: ignore[no-untyped-def]
        self._fastq_direct = True
        try:
            return super().connect_to(address)  # type: ignore[misc]
        finally:
            self._fastq_direct = False

    def connect_check_health(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self._fastq_direct:
            return super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        return self.connect()  # type: ignore[attr-defined]


class _AsyncSentinelReconnect:
    _fastq_direct = False

    async def connect_to(self, address):  # type: ignore[no-untyped-def]
        self._fastq_direct = True
        try:
            return await super().connect_to(address)  # type: ignore[misc]
        finally:
            self._fastq_direct = False

    async def connect_check_health(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self._fastq_direct:
            return await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        return await self.connect()  # type: ignore[attr-defined]

class _SyncSentinelOwner:
    """A Sentinel master client that also closes its connections to the sentinels."""

    _fastq_sentinel: Any = None

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            for s in getattr(self._fastq_sentinel, "sentinels", ()):
                s.close()


class _AsyncSentinelOwner:
    _fastq_sentinel: Any = None

    async def aclose(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().aclose(*args, **kwargs)  # type: ignore[misc]
        finally:
            for s in getattr(self._fastq_sentinel, "sentinels", ()):
                await s.aclose()
