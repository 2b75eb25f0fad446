"""Redis connection helpers shared by the client, worker and supervisor."""
from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def default_url() -> str:
    return os.environ.get("FASTQ_REDIS_URL") or DEFAULT_URL


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and reprs); never raises."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))
    except ValueError:  # unparsable (e.g. a broken IPv6 host): blank out any userinfo
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


def check_bytes_client(client: Any) -> Any:
    """fastq stores protobuf bytes; a client that decodes replies to str would corrupt them."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None and pool.connection_kwargs.get("decode_responses"):
        raise ValueError("fastq needs a Redis client with decode_responses=False")
    return client


def sync_client(url_or_client: Any = None, **kwargs: Any):
    import redis

    if url_or_client is None or isinstance(url_or_client, str):
        url = url_or_client or default_url()
        try:
            return redis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {redact(url)!r}: {exc}") from None
    return check_bytes_client(url_or_client)


_fast_class: Any = None


def fast_connection_class() -> Any:
    """An asyncio Connection that packs commands with hiredis (C) instead of redis-py's Python.

    redis-py's sync client already packs with hiredis; its asyncio client does not, which costs
    ~1.5 us per argument - an ack of 200 tasks spends ~0.3 ms packing. None without hiredis.
    """
    global _fast_class
    if _fast_class is None:
        try:
            import hiredis
            from redis.asyncio.connection import Connection
        except ImportError:  # pragma: no cover - hiredis is a dependency
            _fast_class = False
            return None

        class HiredisPackConnection(Connection):
            def pack_command(self, *args: Any) -> list:
                head = args[0]
                if isinstance(head, str) and " " not in head:  # multi-word names go the slow way
                    try:
                        return [hiredis.pack_command(args)]
                    except TypeError:  # e.g. a memoryview argument
                        pass
                return super().pack_command(*args)

        _fast_class = HiredisPackConnection
    return _fast_class or None


def async_client(url_or_client: Any = None, **kwargs: Any):
    import redis.asyncio

    if url_or_client is None or isinstance(url_or_client, str):
        url = url_or_client or default_url()
        if url.startswith("redis://") and "connection_class" not in kwargs and fast_connection_class():
            kwargs["connection_class"] = fast_connection_class()
        try:
            return redis.asyncio.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {redact(url)!r}: {exc}") from None
    return check_bytes_client(url_or_client)
