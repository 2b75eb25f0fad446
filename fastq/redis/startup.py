"""Fatal or transient: which connection errors no retry can fix, and the start-up PING."""
from __future__ import annotations

import re
import socket
from typing import Any, Optional

import redis
from redis.exceptions import ClusterError, RedisClusterException

from fastq.errors import RedisConfigurationError
from fastq.redis.clients import sync_client
from fastq.redis.errors import ConnectionConfigError, TLSHandshakeError
from fastq.redis.url import redact

# ---------------------------------------------------------------- fatal or transient (start-up checks)

# getaddrinfo: the name does not exist (EAI_NONAME) or has no address (EAI_NODATA); EAI_AGAIN
# ("Temporary failure in name resolution") and the rest are left to retries.
_EAI_FATAL = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)}
_DNS_FATAL_TEXT = ("name or service not known", "no address associated with hostname",
                   "nodename nor servname provided")
_CONNECT_ERROR_RE = re.compile(r"Error -?\d+ connecting to (\S+?)\.\s")
_ACL_HINT = ("grant the ACL user the commands fastq needs (fastq.connection.ACL_WORKER / ACL_PRODUCER / "
             "ACL_READONLY)")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``raise ... from``, or raised while handling), oldest last."""
    out: list[BaseException] = []
    one: Optional[BaseException] = exc
    while one is not None and len(out) < 8 and all(one is not seen for seen in out):
        out.append(one)
        one = one.__cause__ if one.__cause__ is not None else (None if one.__suppress_context__ else one.__context__)
    return out


def _auth_reason(text: str) -> str:
    low = text.lower()
    if "without any password configured" in low or "no password is set" in low:
        return (f"has no password set, yet the Redis URL gives one ({text.strip()}): remove the password from "
                f"the URL, or set one on the server (requirepass / an ACL user)")
    if "authentication required" in low or low.startswith("noauth") or "already authenticated" in low:
        shown = "Authentication required." if "already authenticated" in low else text.strip()  # redis-py's HELLO
        return (f"wants a password (NOAUTH {shown}): give it in the Redis URL "
                f"(redis://:PASSWORD@host:port or redis://USER:PASSWORD@host:port)")
    shown = text.strip() if text.strip().upper().startswith("WRONGPASS") else f"WRONGPASS {text.strip()}"
    return f"refused the credentials ({shown}): check the user name and password in the Redis URL"


def _one_fatal_reason(exc: BaseException) -> Optional[str]:
    text = str(exc)
    low = text.lower()
    if isinstance(exc, RedisConfigurationError):
        return exc.reason
    if isinstance(exc, ConnectionConfigError):
        return f"cannot be used: {text}"
    if isinstance(exc, TLSHandshakeError):
        if exc.timed_out and not exc.plain_text:
            return None  # TCP is up but the server was slow: maybe busy; retry
        rest = text.split(" failed: ", 1)[1] if text.startswith("TLS handshake with ") and " failed: " in text else text
        return f"failed the TLS handshake: {rest}"
    if isinstance(exc, redis.exceptions.AuthenticationWrongNumberOfArgsError):
        return (f"refused AUTH with a user name ({text.strip()}): Redis before 6 has no ACL users; give only a "
                f"password (redis://:PASSWORD@host:port)")
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return _auth_reason(text)
    if isinstance(exc, redis.exceptions.ResponseError):
        head = text.lstrip().split(" ", 1)[0].upper()
        if head == "WRONGPASS" or head == "NOAUTH":
            return _auth_reason(text)
        if isinstance(exc, redis.exceptions.NoPermissionError) or head == "NOPERM" or "no permissions to run" in low:
            shown = text.strip() if text.strip().upper().startswith("NOPERM") else f"NOPERM {text.strip()}"
            return f"refused a command to this user ({shown}): {_ACL_HINT}"
        if "unknown command 'sentinel'" in low:
            return (f"is not a Sentinel ({text.strip()}): give the Sentinels' addresses in redis+sentinel://, or use "
                    f"redis:// for a single Redis")
        if "db index is out of range" in low or "invalid db index" in low:
            return (f"has no such database ({text.strip()}): use a database number below the server's "
                    f"'databases' setting (16 by default)")
        return None  # LOADING, BUSY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, READONLY...: transient
    if isinstance(exc, socket.gaierror):
        if exc.errno in _EAI_FATAL:
            return (f"is unknown: its host name does not resolve ({exc.strerror or text}): check the host in the "
                    f"Redis URL")
        return None
    if isinstance(exc, (redis.exceptions.ConnectionError, RedisClusterException, ClusterError)):
        # messages that carry a fatal cause without the exception itself (cluster and sentinel wrappers)
        if "cluster mode is not enabled" in low or "cluster support disabled" in low:
            return ("is not a Redis Cluster (cluster mode is not enabled on it): use redis:// for a single Redis, or "
                    "give cluster nodes in redis+cluster://")
        if "invalid username-password pair" in low or "wrongpass" in low:
            return _auth_reason("invalid username-password pair or user is disabled.")
        if "noauth" in low:
            return _auth_reason("Authentication required.")
        if any(t in low for t in _DNS_FATAL_TEXT):
            match = _CONNECT_ERROR_RE.search(text)
            what = f"the host name of {match.group(1)}" if match else "its host name"
            start = min(low.index(t) for t in _DNS_FATAL_TEXT if t in low)
            detail = text[start:].split(".", 1)[0]
            return f"is unknown: {what} does not resolve ({detail}): check the host in the Redis URL"
    return None


def fatal_reason(exc: BaseException) -> Optional[str]:
    """What to fix when ``exc`` is an error no retry can fix, else ``None`` (retry it).

    Fatal: wrong password or unknown ACL user (``WRONGPASS``), a password missing (``NOAUTH``)
    or given to a server without one, a missing ACL permission (``NOPERM``), a database number
    out of range, a host name that does not exist (``EAI_NONAME``; a temporary DNS failure,
    ``EAI_AGAIN``, is not), a failed TLS handshake (untrusted certificate, wrong name, a client
    certificate wanted, ``rediss://`` for a plain-text port) and ``ConnectionConfigError``.
    Everything else - connection refused, timeouts, ``LOADING``, ``BUSY``, ``MASTERDOWN``,
    ``TRYAGAIN``, cluster down, no master found - is transient.

    The text reads after ``"Redis at <URL> "``, as ``RedisConfigurationError`` shows it:
    ``"refused the credentials (WRONGPASS ...): check the user name and password in the Redis URL"``.
    Meant for start-up: once a process has been serving, the same errors (a password rotated, a
    DNS record removed) may be fixed under it, and retrying them is the safer choice.
    """
    for one in _chain(exc):
        reason = _one_fatal_reason(one)
        if reason is not None:
            return reason
    return None


def _safe_redact(target: Any) -> str:
    try:
        return redact(target)
    except (ValueError, TypeError):
        return "<the given Redis>"


def preflight(target: Any, timeout: float = 3.0) -> Optional[BaseException]:
    """PING Redis once with a short-lived sync client (no retries; ``timeout`` seconds for the
    connect, the TLS handshake and the reply, unless the URL sets its own).

    Returns ``None`` when Redis answered, the exception when it is transient (not reachable
    yet, loading, failing over: the caller goes on and its retries take over), and raises
    ``RedisConfigurationError`` (``.reason`` from ``fatal_reason``) when no retry can help.
    A bad URL raises ``ConnectionConfigError`` before anything connects.
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = sync_client(target, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        reason = fatal_reason(exc)
        if reason is not None:
            raise RedisConfigurationError(_safe_redact(target), reason) from exc
        return exc
    finally:
        try:
            client.close()
        except (redis.exceptions.RedisError, OSError):  # pragma: no cover - closing a failed client
            pass
    return None
