"""Connection and client classes assembled from mixins (hiredis packing, TLS, Sentinel reconnect,
WAIT durability), cached per combination."""
from __future__ import annotations

from typing import Any, Optional

import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from fastq.redis.durability import _AsyncWait, _SyncWait
from fastq.redis.options import RedisFailoverClientOpt, TLSConfig
from fastq.redis.sentinel import (
    _AsyncSentinelOwner,
    _AsyncSentinelReconnect,
    _SyncSentinelOwner,
    _SyncSentinelReconnect,
)
from fastq.redis.tls import _AsyncTLS, _SyncTLS

# ---------------------------------------------------------------- connection classes

_class_cache: dict = {}


def _pack_mixin() -> Any:
    try:
        import hiredis
    except ImportError:  # pragma: no cover - hiredis is a dependency
        return None

    class HiredisPack:
        """Pack asyncio commands with hiredis (C) instead of redis-py's Python (~1.5 us/argument)."""

        def pack_command(self, *args: Any) -> list:
            head = args[0]
            if isinstance(head, str) and " " not in head:  # multi-word names go the slow way
                try:
                    return [hiredis.pack_command(args)]
                except TypeError:  # e.g. a memoryview argument
                    pass
            return super().pack_command(*args)  # type: ignore[misc]

    return HiredisPack

def _connection_class(base: type, tls: Optional[TLSConfig], asyncio: bool) -> type:
    """``base`` with fastq's TLS (when ``tls``) and, for asyncio, hiredis packing."""
    key = (base, id(tls) if tls is not None else None, asyncio)
    cached = _class_cache.get(key)
    if cached is not None and (tls is None or cached._fastq_tls is tls):
        return cached
    bases: list = []
    if asyncio:
        pack = _pack_mixin()
        if pack is not None:
            bases.append(pack)
    if tls is not None:
        bases.append(_AsyncTLS if asyncio else _SyncTLS)
    if issubclass(base, (redis.sentinel.SentinelManagedConnection, redis.asyncio.sentinel.SentinelManagedConnection)):
        bases.append(_AsyncSentinelReconnect if asyncio else _SyncSentinelReconnect)
    if not bases:
        return base
    cls = type(f"Fastq{'TLS' if tls else ''}{base.__name__}", (*bases, base), {"_fastq_tls": tls})  # noqa: E501
    _class_cache[key] = cls
    return cls

def _redis_class(base: type, opt: Any, asyncio: bool) -> type:
    mixins: list = []
    if getattr(opt, "durability", None):
        mixins.append(_AsyncWait if asyncio else _SyncWait)
    if isinstance(opt, RedisFailoverClientOpt):
        mixins.append(_AsyncSentinelOwner if asyncio else _SyncSentinelOwner)
    if not mixins:
        return base
    key = ("redis", base, tuple(mixins), opt.replicas, opt.replica_timeout)
    if key not in _class_cache:
        name = ("Durable" if getattr(opt, "durability", None) else "") + ("Sentinel" if len(mixins) > 1 or
                                                                          mixins[0] in (_SyncSentinelOwner,
                                                                                        _AsyncSentinelOwner) else "")
        _class_cache[key] = type(f"{name}{base.__name__}", (*mixins, base),
                                 {"_fastq_wait": (opt.replicas, opt.replica_timeout)})
    return _class_cache[key]
