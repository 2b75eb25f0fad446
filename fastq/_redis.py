"""Internal shorthand for ``fastq.redis.facade`` (the clients every part of fastq builds)."""
from __future__ import annotations

from fastq.redis.errors import ConnectionConfigError
from fastq.redis.facade import (
    DEFAULT_URL,
    async_client,
    check_bytes_client,
    default_url,
    fast_connection_class,
    sync_client,
)
from fastq.redis.url import redact

__all__ = ["ConnectionConfigError", "DEFAULT_URL", "async_client", "check_bytes_client", "default_url",
           "fast_connection_class", "sync_client", "redact"]
