"""Connection and client classes assembled from mixins (hiredis packing, TLS, Sentinel reconnect,
WAIT durability), cached per combination."""
from __future__ import annotations

from typing import Any, Optional, TypeVar, cast

import redis.asyncio.sentinel
import redis.sentinel

from fastq.redis._compat import HAVE_HIREDIS, AsyncHiredisPack, AsyncSentinelReconnect, SyncSentinelReconnect
from fastq.redis.durability import _AsyncWait, _SyncWait
from fastq.redis.options import RedisFailoverClientOpt, TLSConfig
from fastq.redis.sentinel import _AsyncSentinelOwner, _SyncSentinelOwner
from fastq.redis.tls import _AsyncTLS, _SyncTLS

# ---------------------------------------------------------------- connection classes

_connection_classes: dict[tuple[type, Optional[int], bool], type] = {}
_redis_classes: dict[tuple[Any, ...], type] = {}


def _connection_class(base: type, tls: Optional[TLSConfig], asyncio: bool) -> type:
    """``base`` with fastq's TLS (when ``tls``) and, for asyncio, hiredis packing."""
    key = (base, id(tls) if tls is not None else None, asyncio)
    cached = _connection_classes.get(key)
    if cached is not None and (tls is None or getattr(cached, "_fastq_tls", None) is tls):
        return cached
    bases: list[type] = []
    if asyncio and HAVE_HIREDIS:
        bases.append(AsyncHiredisPack)
    if tls is not None:
        bases.append(_AsyncTLS if asyncio else _SyncTLS)
    if issubclass(base, (redis.sentinel.SentinelManagedConnection, redis.asyncio.sentinel.SentinelManagedConnection)):
        bases.append(AsyncSentinelReconnect if asyncio else SyncSentinelReconnect)
    if not bases:
        return base
    cls = type(f"Fastq{'TLS' if tls else ''}{base.__name__}", (*bases, base), {"_fastq_tls": tls})
    _connection_classes[key] = cls
    return cls


R = TypeVar("R")


def _redis_class(base: type[R], opt: Any, asyncio: bool) -> type[R]:
    """``base`` (a redis-py client class) with WAIT durability and/or the Sentinel owner, as ``opt`` asks."""
    mixins: list[type] = []
    if getattr(opt, "durability", None):
        mixins.append(_AsyncWait if asyncio else _SyncWait)
    if isinstance(opt, RedisFailoverClientOpt):
        mixins.append(_AsyncSentinelOwner if asyncio else _SyncSentinelOwner)
    if not mixins:
        return base
    key = ("redis", base, tuple(mixins), opt.replicas, opt.replica_timeout)
    if key not in _redis_classes:
        name = ("Durable" if getattr(opt, "durability", None) else "") + ("Sentinel" if len(mixins) > 1 or
                                                                          mixins[0] in (_SyncSentinelOwner,
                                                                                        _AsyncSentinelOwner) else "")
        _redis_classes[key] = type(f"{name}{base.__name__}", (*mixins, base),
                                   {"_fastq_wait": (opt.replicas, opt.replica_timeout)})
    return cast("type[R]", _redis_classes[key])  # a subclass of base
