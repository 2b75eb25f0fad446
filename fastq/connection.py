"""How fastq connects to Redis: one description for every part of fastq.

The client, workers, supervisor, scheduler, inspector, CLI and dashboard all build their
Redis client from the same description, either a URL or an option object mirroring Go
Asynq's ``RedisClientOpt`` / ``RedisFailoverClientOpt`` / ``RedisClusterClientOpt``:

=====================================================================  ===============================
``redis://[user:pass@]host[:port][/db]``                               one Redis (``RedisClientOpt``)
``rediss://...?tls_ca=ca.pem&tls_cert=c.pem&tls_key=k.pem``            the same over TLS
``unix://[user:pass@]/path/redis.sock[?db=N]``                         a Unix socket
``redis-socket://[:pass@]/path/redis.sock[?db=N]``                     Asynq's spelling of it
``redis+sentinel://[user:pass@]h1:p1,h2:p2[/db]?master=NAME``          Sentinel (``RedisFailoverClientOpt``)
``rediss+sentinel://...``                                              Sentinel, TLS to sentinels and data nodes
``redis-sentinel://[:pass@]h1:p1,h2:p2[/db]?master=NAME``              Asynq's spelling: the password is the Sentinels'
``redis+cluster://[user:pass@]h1:p1,h2:p2``                            Redis Cluster (``RedisClusterClientOpt``)
``rediss+cluster://...``                                               Redis Cluster over TLS
=====================================================================  ===============================

Query options (any form, where they apply): ``db``; ``tls_ca``, ``tls_cert``, ``tls_key``,
``tls_server_name`` (redis-py's ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` are accepted
too); ``socket_timeout``, ``socket_connect_timeout`` (seconds), ``max_connections``;
Sentinel: ``master`` (required), ``sentinel_username``, ``sentinel_password``; Cluster:
``max_redirects``; ``durability=replicated`` with ``replicas`` (default 1) and
``replica_timeout`` (seconds, default 1). Anything else is refused.

TLS verification is always on: the server's certificate must chain to ``tls_ca`` (or the
system store) and name the host connected to (or ``tls_server_name``). There is no switch to
turn it off; a failed handshake raises ``TLSHandshakeError`` saying what to fix. A handshake
times out after ``socket_connect_timeout`` (unset: 5 s, or ``socket_timeout`` if shorter); one
that times out because the port speaks plain text (``rediss://`` for a ``redis://`` port) says so.

``durability="replicated"`` makes every script call (every enqueue) wait for ``replicas``
replicas to acknowledge the write (``WAIT``), and raise ``NotReplicatedError`` when they did
not within ``replica_timeout``: an enqueue that returned is then on a replica too and survives
a failover. Workers ignore it (a lost acknowledgement means a re-run, never a lost task).

Bad input - a URL, an option, a TLS file - raises ``ConnectionConfigError`` (a ``ValueError``)
naming what is wrong, before anything connects. ``fatal_reason(exc)`` tells the errors of a
connection that no retry can fix (wrong password or user, a missing ACL permission, an unknown
host, a failed TLS handshake) from transient ones; ``preflight(url)`` PINGs once at start-up and
raises ``RedisConfigurationError`` for the former. Passwords never appear in reprs, logs or
errors: ``redact()`` masks them.
"""
from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import re
import socket
import ssl
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional, Union
from urllib.parse import parse_qsl, quote, unquote

import redis
import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.client
import redis.cluster
import redis.connection
import redis.sentinel
from redis.exceptions import ClusterError, RedisClusterException, SlotNotCoveredError

from fastq.errors import FastqError, RedisConfigurationError

__all__ = [
    "TLSConfig", "RedisClientOpt", "RedisFailoverClientOpt", "RedisClusterClientOpt", "RedisConnOpt",
    "parse_url", "parse_redis_uri", "redact", "sync_client", "async_client", "is_cluster",
    "ConnectionConfigError", "TLSHandshakeError", "NotReplicatedError", "ClusterUnavailableError",
    "RedisConfigurationError", "fatal_reason", "preflight",
]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 5.0  # seconds, when socket_connect_timeout is not set
MASK = "***"


# ---------------------------------------------------------------- errors

class ConnectionConfigError(FastqError, ValueError):
    """A Redis URL, connection option or TLS file fastq cannot use; nothing was connected."""


class TLSHandshakeError(FastqError, redis.exceptions.ConnectionError):
    """The TLS handshake failed: the server's certificate was not trusted or does not name the
    host, or the server refused ours. Never retried into a plain-text connection.

    ``plain_text``: the port does not speak TLS (it answered a plain-text PING, or with bytes
    that are not TLS): the URL should be ``redis://``. ``timed_out``: the server accepted the
    TCP connection but did not finish the handshake in time (and is not a plain-text Redis).
    """

    def __init__(self, message: str = "", *, plain_text: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.plain_text = plain_text
        self.timed_out = timed_out


class NotReplicatedError(FastqError, redis.exceptions.RedisError):
    """``durability="replicated"``: the write is on the primary but fewer replicas than asked
    acknowledged it in time, so a failover now could lose it.

    ``task_ids`` names the tasks of that write. Enqueue them again with the same
    ``task_id``: ``TaskIDConflictError`` then means the first write was kept.
    """

    def __init__(self, acked: int, wanted: int, timeout: float, task_ids: list[str]) -> None:
        self.acked = acked
        self.wanted = wanted
        self.timeout = timeout
        self.task_ids = task_ids
        shown = ", ".join(task_ids[:3]) + (f" (+{len(task_ids) - 3} more)" if len(task_ids) > 3 else "")
        super().__init__(
            f"write reached {acked} of {wanted} replica(s) within {timeout:g}s; it is on the primary only and a "
            f"failover could lose it" + (f" (task IDs: {shown})" if task_ids else "")
            + "; enqueue again with the same task_id (TaskIDConflictError then means it was kept)")


class ClusterUnavailableError(FastqError, redis.exceptions.ConnectionError):
    """No cluster node answers, or a slot has no node (during a failover): a transient
    connection error for fastq's retry loops, not redis-py's ``RedisClusterException``."""


# ---------------------------------------------------------------- option objects

def _fail(message: str) -> ConnectionConfigError:
    return ConnectionConfigError(message)


def _seconds(name: str, value: Any, allow_none: bool = True) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"{name} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise _fail(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _int(name: str, value: Any, minimum: int, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise _fail(f"{name} must be at least {minimum}, got {value}")
    return value


def _text(name: str, value: Any, allow_none: bool = True) -> Optional[str]:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise _fail(f"{name} must be a str, got {type(value).__name__}")
    return value


def _addr(name: str, value: Any, default_port: int) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"host"`` or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
        host = _text(name, host, allow_none=False)
        port = _int(name, port, 1, allow_none=False)
    else:
        text = _text(name, value, allow_none=False)
        host, port = _split_host_port(text, default_port, name)
    if not host or any(c.isspace() for c in host) or "/" in host or "@" in host:
        raise _fail(f"{name}: bad host {host!r}")
    if not 1 <= port <= 65535:
        raise _fail(f"{name}: port must be 1-65535, got {port}")
    return host, port


def _split_host_port(text: str, default_port: int, what: str) -> tuple[str, int]:
    text = text.strip()
    if not text:
        raise _fail(f"{what}: empty address")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _fail(f"{what}: unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _fail(f"{what}: {host!r} in brackets is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise _fail(f"{what}: unexpected {rest!r} after the address")
        port_text = rest[1:] if rest else ""
    else:
        if text.count(":") > 1:
            raise _fail(f"{what}: put an IPv6 address in brackets: [{text}]:port")
        host, _, port_text = text.partition(":")
        if ":" in text and not port_text:
            raise _fail(f"{what}: empty port in {text!r}")
    if port_text:
        if not port_text.isdigit():  # worded as urllib words it, which earlier fastq versions showed
            raise _fail(f"{what}: Port could not be cast to integer value as {port_text!r} (a port is a number 1-65535)")
        port = int(port_text)
    else:
        port = default_port
    if not 1 <= port <= 65535:
        raise _fail(f"{what}: port must be 1-65535, got {port}")
    if not host:
        raise _fail(f"{what}: no host in {text!r}")
    return host, port


def _fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, repr=False)
class TLSConfig:
    """TLS for Redis connections; verification is always on.

    ``ca_file``: PEM file of the CA(s) that signed the server certificate (default: the system's
    trust store). ``cert_file`` / ``key_file``: this client's certificate and key (mutual TLS,
    ``tls-auth-clients yes``); the key may also sit in ``cert_file``. ``server_name``: the name the
    server certificate must carry and the SNI sent (default: the host connected to; set it when
    you connect by IP address or through a proxy and the certificate names a DNS name).
    Files are read and checked here: a missing or unreadable file raises ``ConnectionConfigError``.
    """

    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    server_name: Optional[str] = None
    _context: Any = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file", "server_name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise _fail(f"tls {name} must be a path (str), got {type(value).__name__}")
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if self.server_name is not None and (not self.server_name.strip() or "/" in self.server_name):
            raise _fail(f"tls server_name {self.server_name!r} is not a host name")
        if self.key_file is not None and self.cert_file is None:
            raise _fail("tls key_file given without cert_file (a client certificate needs both)")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is None:
                continue
            if not os.path.isfile(path):
                raise _fail(f"tls {name}: no such file: {path}")
            if not os.access(path, os.R_OK):
                raise _fail(f"tls {name}: not readable: {path}")
        object.__setattr__(self, "_context", self._build())

    def _build(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # CERT_REQUIRED + hostname check
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise _fail(f"tls ca_file {self.ca_file}: not a PEM CA certificate ({_ssl_reason(exc)})") from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise _fail(f"tls cert_file {self.cert_file} / key_file {self.key_file}: not a PEM certificate "
                            f"and matching private key ({_ssl_reason(exc)})") from None
        return context

    def context(self) -> ssl.SSLContext:
        return self._context

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                          if not f.name.startswith("_") and getattr(self, f.name) is not None)
        return f"TLSConfig({shown})"


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or getattr(exc, "strerror", None) \
        or str(exc) or type(exc).__name__


DURABILITY = (None, "replicated")


class _Opt:
    """What the three option classes share: checks, repr without secrets, URL round trip."""

    _secret_fields = ("password", "sentinel_password")

    def _check_common(self) -> None:
        for name in ("username", "password"):
            _text(name, getattr(self, name))
        if self.tls is not None and not isinstance(self.tls, TLSConfig):
            raise _fail(f"tls must be a fastq.connection.TLSConfig, got {type(self.tls).__name__}")
        object.__setattr__(self, "socket_timeout", _seconds("socket_timeout", self.socket_timeout))
        object.__setattr__(self, "socket_connect_timeout",
                           _seconds("socket_connect_timeout", self.socket_connect_timeout))
        _int("max_connections", self.max_connections, 1)

    def _check_durability(self) -> None:
        if self.durability not in DURABILITY:
            raise _fail(f"durability must be None or 'replicated', got {self.durability!r}")
        _int("replicas", self.replicas, 1, allow_none=False)
        object.__setattr__(self, "replica_timeout", _seconds("replica_timeout", self.replica_timeout, False))

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None or value == f.default:
                continue
            shown.append(f"{f.name}={MASK!r}" if f.name in self._secret_fields else f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    __str__ = __repr__

    def redacted_url(self) -> str:
        """``to_url()`` with passwords masked (for logs and messages)."""
        return self._url(reveal=False)

    def to_url(self) -> str:
        """The URL that ``parse_url`` turns back into this object. It holds the password: pass it
        to other processes, never log it (``redacted_url()`` / ``redact()`` are for that)."""
        return self._url(reveal=True)

    def _common_query(self) -> list[tuple[str, str]]:
        q: list[tuple[str, str]] = []
        if self.tls is not None:
            for name, key in (("ca_file", "tls_ca"), ("cert_file", "tls_cert"), ("key_file", "tls_key"),
                              ("server_name", "tls_server_name")):
                value = getattr(self.tls, name)
                if value is not None:
                    q.append((key, value))
        for name in ("socket_timeout", "socket_connect_timeout", "max_connections"):
            value = getattr(self, name)
            if value is not None:
                q.append((name, f"{value:g}" if isinstance(value, float) else str(value)))
        durability = getattr(self, "durability", None)
        if durability:
            q += [("durability", durability), ("replicas", str(self.replicas)),
                  ("replica_timeout", f"{self.replica_timeout:g}")]
        return q


def _userinfo(username: Optional[str], password: Optional[str], reveal: bool) -> str:
    if username is None and password is None:
        return ""
    user = quote(username or "", safe="")
    if password is None:
        return f"{user}@"
    return f"{user}:{quote(password, safe='') if reveal else MASK}@"


def _query(pairs: list[tuple[str, str]], reveal: bool) -> str:
    if not pairs:
        return ""
    out = []
    for k, v in pairs:
        out.append(f"{k}={MASK if k in _SECRET_QUERY and not reveal else quote(v, safe='/:')}")
    return "?" + "&".join(out)


@dataclass(frozen=True, repr=False)
class RedisClientOpt(_Opt):
    """One Redis server (Asynq's ``RedisClientOpt``): ``addr`` is ``"host:port"``, or the socket
    path when ``network="unix"``. ``tls`` turns TLS on (``rediss://``)."""

    addr: str = "127.0.0.1:6379"
    network: str = "tcp"
    username: Optional[str] = None
    password: Optional[str] = None
    db: int = 0
    tls: Optional[TLSConfig] = None
    socket_timeout: Optional[float] = None
    socket_connect_timeout: Optional[float] = None
    max_connections: Optional[int] = None
    durability: Optional[str] = None
    replicas: int = 1
    replica_timeout: float = 1.0

    def __post_init__(self) -> None:
        self._check_common()
        self._check_durability()
        _int("db", self.db, 0, allow_none=False)
        if self.network not in ("tcp", "unix"):
            raise _fail(f"network must be 'tcp' or 'unix', got {self.network!r}")
        if self.network == "unix":
            path = _text("addr", self.addr, allow_none=False)
            if not path.startswith("/"):
                raise _fail(f"a unix socket path must be absolute, got {path!r}")
            if self.tls is not None:
                raise _fail("TLS over a unix socket is not supported")
        else:
            _addr("addr", self.addr, DEFAULT_PORT)

    @property
    def host_port(self) -> tuple[str, int]:
        return _addr("addr", self.addr, DEFAULT_PORT)

    def _url(self, reveal: bool) -> str:
        auth = _userinfo(self.username, self.password, reveal)
        q = self._common_query()
        if self.network == "unix":
            if self.db:
                q.insert(0, ("db", str(self.db)))
            return f"unix://{auth}{quote(self.addr)}{_query(q, reveal)}"
        scheme = "rediss" if self.tls is not None else "redis"
        host, port = self.host_port
        return f"{scheme}://{auth}{_fmt_addr(host, port)}/{self.db}{_query(q, reveal)}"


@dataclass(frozen=True, repr=False)
class RedisFailoverClientOpt(_Opt):
    """A Redis master found through Sentinel (Asynq's ``RedisFailoverClientOpt``).

    ``username`` / ``password`` are the data nodes' credentials; ``sentinel_username`` /
    ``sentinel_password`` the Sentinels' (``requirepass`` / ACL of the sentinel processes).
    ``tls`` applies to both. Clients ask the Sentinels for the master at each new connection and
    reconnect when it changes or answers ``READONLY`` (a demoted master).
    """

    master_name: str = ""
    sentinel_addrs: tuple = ()
    username: Optional[str] = None
    password: Optional[str] = None
    sentinel_username: Optional[str] = None
    sentinel_password: Optional[str] = None
    db: int = 0
    tls: Optional[TLSConfig] = None
    socket_timeout: Optional[float] = None
    socket_connect_timeout: Optional[float] = None
    max_connections: Optional[int] = None
    durability: Optional[str] = None
    replicas: int = 1
    replica_timeout: float = 1.0

    def __post_init__(self) -> None:
        self._check_common()
        self._check_durability()
        _int("db", self.db, 0, allow_none=False)
        for name in ("sentinel_username", "sentinel_password"):
            _text(name, getattr(self, name))
        if not isinstance(self.master_name, str) or not self.master_name.strip():
            raise _fail("master_name is required: the name Sentinel monitors (URL: ?master=NAME)")
        addrs = self.sentinel_addrs
        if isinstance(addrs, str):
            addrs = tuple(a for a in addrs.split(","))
        if not isinstance(addrs, (list, tuple)) or not addrs:
            raise _fail("sentinel_addrs needs at least one 'host:port'")
        object.__setattr__(self, "sentinel_addrs",
                           tuple(_fmt_addr(*_addr("sentinel_addrs", a, DEFAULT_SENTINEL_PORT)) for a in addrs))

    def sentinels(self) -> list[tuple[str, int]]:
        return [_addr("sentinel_addrs", a, DEFAULT_SENTINEL_PORT) for a in self.sentinel_addrs]

    def _url(self, reveal: bool) -> str:
        scheme = "rediss+sentinel" if self.tls is not None else "redis+sentinel"
        auth = _userinfo(self.username, self.password, reveal)
        q = [("master", self.master_name)]
        if self.sentinel_username is not None:
            q.append(("sentinel_username", self.sentinel_username))
        if self.sentinel_password is not None:
            q.append(("sentinel_password", self.sentinel_password))
        q += self._common_query()
        return f"{scheme}://{auth}{','.join(self.sentinel_addrs)}/{self.db}{_query(q, reveal)}"


@dataclass(frozen=True, repr=False)
class RedisClusterClientOpt(_Opt):
    """A Redis Cluster (Asynq's ``RedisClusterClientOpt``): ``addrs`` are some of its nodes
    (the client learns the rest). Each queue lives in one slot (``{queue}`` hash tags)."""

    addrs: tuple = ()
    username: Optional[str] = None
    password: Optional[str] = None
    tls: Optional[TLSConfig] = None
    socket_timeout: Optional[float] = None
    socket_connect_timeout: Optional[float] = None
    max_connections: Optional[int] = None
    max_redirects: Optional[int] = None

    def __post_init__(self) -> None:
        self._check_common()
        _int("max_redirects", self.max_redirects, 1)
        addrs = self.addrs
        if isinstance(addrs, str):
            addrs = tuple(addrs.split(","))
        if not isinstance(addrs, (list, tuple)) or not addrs:
            raise _fail("addrs needs at least one cluster node 'host:port'")
        object.__setattr__(self, "addrs", tuple(_fmt_addr(*_addr("addrs", a, DEFAULT_PORT)) for a in addrs))

    def nodes(self) -> list[tuple[str, int]]:
        return [_addr("addrs", a, DEFAULT_PORT) for a in self.addrs]

    def _url(self, reveal: bool) -> str:
        scheme = "rediss+cluster" if self.tls is not None else "redis+cluster"
        q = self._common_query()
        if self.max_redirects is not None:
            q.append(("max_redirects", str(self.max_redirects)))
        return f"{scheme}://{_userinfo(self.username, self.password, reveal)}{','.join(self.addrs)}{_query(q, reveal)}"


RedisConnOpt = Union[RedisClientOpt, RedisFailoverClientOpt, RedisClusterClientOpt]
OPTION_TYPES = (RedisClientOpt, RedisFailoverClientOpt, RedisClusterClientOpt)


# ---------------------------------------------------------------- URLs

_SCHEMES = {
    "redis": "single", "rediss": "single", "unix": "unix", "redis-socket": "unix",
    "redis+sentinel": "sentinel", "rediss+sentinel": "sentinel", "redis-sentinel": "sentinel",
    "redis+cluster": "cluster", "rediss+cluster": "cluster",
}
_TLS_KEYS = {"tls_ca": "ca_file", "ssl_ca_certs": "ca_file", "tls_cert": "cert_file", "ssl_certfile": "cert_file",
             "tls_key": "key_file", "ssl_keyfile": "key_file", "tls_server_name": "server_name"}
_COMMON_KEYS = {"socket_timeout", "socket_connect_timeout", "max_connections", *_TLS_KEYS}
_DURABILITY_KEYS = {"durability", "replicas", "replica_timeout"}
_KEYS = {
    "single": {"db", *_COMMON_KEYS, *_DURABILITY_KEYS},
    "unix": {"db", "socket_timeout", "socket_connect_timeout", "max_connections", *_DURABILITY_KEYS},
    "sentinel": {"db", "master", "sentinel_username", "sentinel_password", *_COMMON_KEYS, *_DURABILITY_KEYS},
    "cluster": {"max_redirects", *_COMMON_KEYS},
}
_SECRET_QUERY = {"password", "sentinel_password"}
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.S)


def _url_error(url: str, why: str) -> ConnectionConfigError:
    return ConnectionConfigError(f"invalid Redis URL {redact(url)!r}: {why}")


def parse_url(url: Any) -> RedisConnOpt:
    """Turn a URL (any form in the module doc) into an option object; ``ConnectionConfigError``
    (naming the problem, never the password) for anything fastq cannot use."""
    if not isinstance(url, str):
        raise ConnectionConfigError(f"a Redis URL must be a str, got {type(url).__name__}")
    try:
        return _parse(url)
    except ConnectionConfigError as exc:
        text = str(exc)
        if not text.startswith("invalid Redis URL"):
            text = str(_url_error(url, text))
        raise ConnectionConfigError(_scrub(text, url)) from None


def _parse(url: str) -> RedisConnOpt:
    m = _URL_RE.match(url.strip())
    if not m:
        raise _url_error(url, "expected scheme://..., e.g. redis://127.0.0.1:6379/0")
    scheme, rest = m.group(1).lower(), m.group(2)
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise _url_error(url, f"unknown scheme {scheme + '://'!r}: the scheme must be one of "
                              + ", ".join(s + "://" for s in _SCHEMES))
    if "#" in rest:
        raise _url_error(url, "a '#' fragment is not allowed (percent-encode '#' in a password as %23)")
    rest, _, query_text = rest.partition("?")
    # userinfo ends at the last '@' before the path (passwords may contain '@' only percent-encoded)
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user_text, colon, pass_text = userinfo.partition(":")
        username = unquote(user_text) if user_text else None
        password = unquote(pass_text) if colon else None
        if not colon and kind != "unix":  # redis://name@host: a user name without a password
            password = None
    try:
        query = parse_qsl(query_text, keep_blank_values=True, strict_parsing=bool(query_text))
    except ValueError:
        raise _url_error(url, "malformed query string") from None
    opts: dict[str, str] = {}
    for key, value in query:
        if key in opts:
            raise _url_error(url, f"query option {key!r} is given twice")
        if key not in _KEYS[kind]:
            why = f"unknown query option {key!r}"
            if key in ("ssl_cert_reqs", "ssl_check_hostname", "insecure", "tls_insecure", "verify"):
                why = f"{key!r}: fastq always verifies TLS certificates (give tls_ca / tls_server_name instead)"
            elif key in _TLS_KEYS or key in _COMMON_KEYS or key in _DURABILITY_KEYS:
                why = f"query option {key!r} does not apply to {scheme}://"
            raise _url_error(url, f"{why}; valid here: {', '.join(sorted(_KEYS[kind]))}")
        opts[key] = value
    try:
        if kind == "unix":
            return _parse_unix(url, scheme, hosts, path, username, password, opts)
        tls = _tls_from(url, scheme, opts)
        common = _common_from(url, opts)
        if kind == "single":
            return _parse_single(url, hosts, path, username, password, opts, tls, common)
        if kind == "sentinel":
            return _parse_sentinel(url, scheme, hosts, path, username, password, opts, tls, common)
        return _parse_cluster(url, hosts, path, username, password, opts, tls, common)
    except ConnectionConfigError as exc:
        text = str(exc)
        if text.startswith("invalid Redis URL"):
            raise
        raise _url_error(url, text) from None


parse_redis_uri = parse_url  # Go Asynq's ParseRedisURI


def _scrub(message: str, url: str) -> str:
    """Mask in ``message`` every piece of what may be a password in ``url``: the text between
    ``://`` and the last ``@`` (a password with an unencoded ``/``, ``?`` or ``@`` can end up
    parsed as a host, port, path or query, and quoted back in an error)."""
    m = _URL_RE.match(url.strip())
    if m is None:
        return message
    rest = m.group(2)
    at = rest.rfind("@")
    if at < 0 or ":" not in rest[:at]:
        return message
    secret = rest[:at].split(":", 1)[1]
    pieces = {secret, unquote(secret)} | {p for p in re.split(r"[/?#@&=:;,]", secret) if len(p) >= 3}
    pieces |= {unquote(p) for p in pieces}
    for piece in sorted((p for p in pieces if p), key=len, reverse=True):
        message = message.replace(piece, MASK)
    return message


def _db(url: str, path: str, opts: dict) -> int:
    text = opts.pop("db", None)
    from_path = path.strip("/")
    if text is not None and from_path:
        raise _url_error(url, "the database is given both in the path and as ?db=")
    text = text if text is not None else from_path
    if not text:
        return 0
    if not text.isdigit():
        raise _url_error(url, f"the database must be a number, not {text!r}")
    return int(text)


def _number(url: str, opts: dict, key: str, kind: type) -> Any:
    text = opts.pop(key, None)
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise _url_error(url, f"{key} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _common_from(url: str, opts: dict) -> dict:
    out = {"socket_timeout": _number(url, opts, "socket_timeout", float),
           "socket_connect_timeout": _number(url, opts, "socket_connect_timeout", float),
           "max_connections": _number(url, opts, "max_connections", int)}
    if "durability" in opts or "replicas" in opts or "replica_timeout" in opts:
        out["durability"] = opts.pop("durability", None) or None
        replicas = _number(url, opts, "replicas", int)
        timeout = _number(url, opts, "replica_timeout", float)
        if out["durability"] is None:
            raise _url_error(url, "replicas / replica_timeout need durability=replicated")
        out["replicas"] = 1 if replicas is None else replicas
        out["replica_timeout"] = 1.0 if timeout is None else timeout
    return out


def _tls_from(url: str, scheme: str, opts: dict) -> Optional[TLSConfig]:
    given = {}
    for key in list(opts):
        if key in _TLS_KEYS:
            name = _TLS_KEYS[key]
            if name in given:
                raise _url_error(url, f"{key!r} repeats another option for the TLS {name}")
            given[name] = unquote(opts.pop(key))
    if not scheme.startswith("rediss"):
        if given:
            raise _url_error(url, f"TLS options ({', '.join(sorted(given))}) need a TLS scheme "
                                  f"({scheme.replace('redis', 'rediss', 1)}://), or this would connect in plain text")
        return None
    return TLSConfig(**given)


def _hosts(url: str, hosts: str, default_port: int, many: bool) -> list[str]:
    if not hosts:
        raise _url_error(url, "no host")
    parts = hosts.split(",")
    if len(parts) > 1 and not many:
        raise _url_error(url, "several hosts are only allowed in redis+sentinel:// and redis+cluster:// URLs")
    out = []
    for part in parts:
        host, port = _split_host_port(unquote(part), default_port, "host")
        out.append(_fmt_addr(host, port))
    return out


def _parse_single(url, hosts, path, username, password, opts, tls, common) -> RedisClientOpt:
    (addr,) = _hosts(url, hosts, DEFAULT_PORT, many=False)
    db = _db(url, path, opts)
    return RedisClientOpt(addr=addr, username=username, password=password, db=db, tls=tls,
                          **{k: v for k, v in common.items() if v is not None})


def _parse_unix(url, scheme, hosts, path, username, password, opts) -> RedisClientOpt:
    if hosts:
        raise _url_error(url, f"{scheme}:// takes a path, not a host: {scheme}:///path/to/redis.sock")
    if not path or path == "/":
        raise _url_error(url, "no socket path")
    db_text = opts.pop("db", None)
    if db_text is not None and not db_text.isdigit():
        raise _url_error(url, f"the database must be a number, not {db_text!r}")
    common = _common_from(url, opts)
    return RedisClientOpt(addr=unquote(path), network="unix", username=username, password=password,
                          db=int(db_text or 0), **{k: v for k, v in common.items() if v is not None})


def _parse_sentinel(url, scheme, hosts, path, username, password, opts, tls, common) -> RedisFailoverClientOpt:
    addrs = _hosts(url, hosts, DEFAULT_SENTINEL_PORT, many=True)
    master = opts.pop("master", "")
    if not master.strip():
        raise _url_error(url, "?master=NAME (the name Sentinel monitors) is required")
    db = _db(url, path, opts)
    s_user = opts.pop("sentinel_username", None)
    s_pass = opts.pop("sentinel_password", None)
    if scheme == "redis-sentinel":
        # Asynq v0.26 reads the URL's password as the Sentinels' password (SentinelPassword).
        if s_user is not None or s_pass is not None:
            raise _url_error(url, "in redis-sentinel:// (Asynq's form) the password is the Sentinels'; for "
                                  "separate credentials use redis+sentinel://user:pass@...?sentinel_password=...")
        s_user, s_pass, username, password = username, password, None, None
    return RedisFailoverClientOpt(master_name=master, sentinel_addrs=tuple(addrs), username=username,
                                  password=password, sentinel_username=s_user, sentinel_password=s_pass, db=db,
                                  tls=tls, **{k: v for k, v in common.items() if v is not None})


def _parse_cluster(url, hosts, path, username, password, opts, tls, common) -> RedisClusterClientOpt:
    addrs = _hosts(url, hosts, DEFAULT_PORT, many=True)
    if path.strip("/") not in ("", "0"):
        raise _url_error(url, "Redis Cluster has only database 0")
    if common.get("durability"):
        raise _url_error(url, "durability=replicated is not supported on Redis Cluster (WAIT must follow the write "
                              "on the same node connection); use min-replicas-to-write on the nodes instead")
    return RedisClusterClientOpt(addrs=tuple(addrs), username=username, password=password, tls=tls,
                                 max_redirects=_number(url, opts, "max_redirects", int),
                                 **{k: v for k, v in common.items() if v is not None and k != "durability"})


def as_options(target: Any) -> RedisConnOpt:
    """A URL or an option object -> an option object."""
    if isinstance(target, OPTION_TYPES):
        return target
    return parse_url(target)


# ---------------------------------------------------------------- redaction

_QUERY_SECRET_RE = re.compile(r"(?P<key>[?&](?:password|sentinel_password)=)[^&#]*", re.I)


def redact(target: Any) -> str:
    """A URL or option object as text with every password replaced by ``***``; never raises.

    Errs on the side of masking: the userinfo is everything up to the last ``@``, so an
    unencoded ``@``, ``/`` or ``?`` in a password cannot leak its tail.
    """
    if isinstance(target, OPTION_TYPES) or isinstance(target, TLSConfig):
        return repr(target)
    if not isinstance(target, str):
        return f"<{type(target).__name__}>"
    m = _URL_RE.match(target)
    if m is None:
        return _QUERY_SECRET_RE.sub(lambda q: q.group("key") + MASK, target)
    scheme, rest = m.group(1), m.group(2)
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:{MASK}@{rest[at + 1:]}"
    return _QUERY_SECRET_RE.sub(lambda q: q.group("key") + MASK, f"{scheme}://{rest}")


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


def _describe_tls_failure(exc: BaseException, host: str, port: Any, name: str) -> str:
    reason = _ssl_reason(exc)
    where = f"TLS handshake with {host}:{port} failed: {reason}"
    if isinstance(exc, TimeoutError):
        return (f"TLS handshake with {host}:{port} timed out: the server never answered it (is this port TLS? "
                f"use redis:// for a plain-text port)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        where = f"TLS handshake with {host}:{port} failed: certificate verify failed: {reason}"
        if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
            return (f"{where} (the certificate does not name {name!r}; connect by a name the certificate "
                    f"carries or set tls_server_name)")
        return f"{where} (the server's certificate is not signed by a trusted CA: give its CA with tls_ca)"
    if "certificate required" in reason.lower() or "handshake failure" in reason.lower():
        return f"{where} (the server wants a client certificate: give tls_cert and tls_key)"
    if "wrong version number" in reason.lower() or "record layer" in reason.lower():
        return f"{where} (is this port TLS? use redis:// for a plain-text port)"
    return where


def _tls_failure(exc: BaseException, host: str, port: Any, name: str) -> TLSHandshakeError:
    reason = _ssl_reason(exc).lower()
    not_tls = isinstance(exc, ssl.SSLError) and ("wrong version number" in reason or "record layer" in reason)
    return TLSHandshakeError(_describe_tls_failure(exc, host, port, name), plain_text=not_tls)


def _plain_text_failure(host: str, port: Any, timeout: float) -> TLSHandshakeError:
    return TLSHandshakeError(
        f"TLS handshake with {host}:{port} failed: is this port TLS? It speaks plain text: it answered a plain-text "
        f"PING but not the handshake (in {timeout:g}s): use redis:// for it, or the port Redis serves TLS on",
        plain_text=True)


def _probe_timeout(timeout: Optional[float]) -> float:
    """A plain-text Redis answers PING in milliseconds; a black-holed host must not cost much more."""
    return min(1.0, timeout or 1.0)


def _is_plain_redis(reply: bytes) -> bool:
    """A RESP simple string or error (``+PONG``, ``-NOAUTH ...``) to ``PING``: a Redis speaking plain text."""
    return reply[:1] in (b"+", b"-") and reply.endswith(b"\r\n")


def _speaks_plain_redis(host: str, port: Any, timeout: float) -> bool:
    """Only after a TLS handshake timed out: does ``host:port`` answer a plain-text PING?"""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except (OSError, ValueError):
        return False
    return _is_plain_redis(reply)


async def _aspeaks_plain_redis(host: str, port: Any, timeout: float) -> bool:
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        writer.write(b"PING\r\n")
        reply = await asyncio.wait_for(reader.read(64), timeout)
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
    return _is_plain_redis(reply)


def _closed_after_handshake(exc: BaseException, tls: TLSConfig, host: str, port: Any) -> Optional[TLSHandshakeError]:
    """TLS 1.3 servers check the client certificate after the handshake: a server that wants one
    closes the connection at our first command. Say so instead of "EOF in violation of protocol"."""
    text = f"{exc} {exc.__cause__ or ''}".lower()
    if tls.cert_file is not None or not any(w in text for w in ("eof occurred", "certificate required",
                                                                 "connection reset", "closed by server")):
        return None
    return TLSHandshakeError(f"TLS handshake with {host}:{port} failed: the server closed the connection right after "
                             f"the handshake ({exc}); it probably wants a client certificate (tls-auth-clients "
                             f"yes): give tls_cert and tls_key")


class _SyncTLS:
    """Wrap the socket with fastq's TLS context (verification on; server name override)."""

    _fastq_tls: TLSConfig

    def on_connect_check_health(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return super().on_connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ConnectionError as exc:
            better = _closed_after_handshake(exc, self._fastq_tls, self.host, self.port)
            if better is None:
                raise
            raise better from None

    def _connect(self):  # type: ignore[no-untyped-def]
        sock = super()._connect()  # type: ignore[misc]
        name = self._fastq_tls.server_name or self.host
        # The handshake is bounded like the TCP connect, not by socket_timeout alone (often None or
        # long, it is for commands): a rediss:// URL for a plain-text port would wait that long.
        timeout = self.socket_connect_timeout
        if timeout is None:
            timeout = min(DEFAULT_TLS_HANDSHAKE_TIMEOUT, self.socket_timeout or DEFAULT_TLS_HANDSHAKE_TIMEOUT)
        try:
            sock.settimeout(timeout)
            wrapped = self._fastq_tls.context().wrap_socket(sock, server_hostname=name)
        except (ssl.SSLError, ssl.CertificateError, TimeoutError) as exc:  # TCP is up: this is the handshake
            sock.close()
            if isinstance(exc, TimeoutError) and not isinstance(exc, ssl.SSLError):
                if _speaks_plain_redis(self.host, self.port, _probe_timeout(timeout)):
                    raise _plain_text_failure(self.host, self.port, timeout) from None
                raise TLSHandshakeError(_describe_tls_failure(exc, self.host, self.port, name),
                                        timed_out=True) from None
            raise _tls_failure(exc, self.host, self.port, name) from None
        except OSError:
            sock.close()
            raise
        wrapped.settimeout(self.socket_timeout)
        return wrapped


class _AsyncTLS:
    _fastq_tls: TLSConfig

    async def on_connect_check_health(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return await super().on_connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ConnectionError as exc:
            better = _closed_after_handshake(exc, self._fastq_tls, self.host, self.port)
            if better is None:
                raise
            raise better from None

    def _connection_arguments(self):  # type: ignore[no-untyped-def]
        kwargs = dict(super()._connection_arguments())  # type: ignore[misc]
        kwargs["ssl"] = self._fastq_tls.context()
        kwargs["server_hostname"] = self._fastq_tls.server_name or self.host
        return kwargs

    async def connect_check_health(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ConnectionError as exc:  # redis-py wraps what _connect raises: unwrap ours
            if isinstance(exc.__cause__, TLSHandshakeError):
                raise exc.__cause__ from None
            raise

    async def _connect(self):  # type: ignore[no-untyped-def]
        # redis-py bounds TCP connect + handshake by socket_connect_timeout, and not at all when it
        # is None: a rediss:// URL for a plain-text port would then wait forever.
        timeout = self.socket_connect_timeout
        try:
            if timeout is None:
                timeout = DEFAULT_TLS_HANDSHAKE_TIMEOUT
                await asyncio.wait_for(super()._connect(), timeout)  # type: ignore[misc]
            else:
                await super()._connect()  # type: ignore[misc]
        except (ssl.SSLError, ssl.CertificateError) as exc:
            name = self._fastq_tls.server_name or self.host
            raise _tls_failure(exc, self.host, self.port, name) from None
        except (asyncio.TimeoutError, TimeoutError):  # TCP connect or handshake: plain text if it answers PING
            if await _aspeaks_plain_redis(self.host, self.port, _probe_timeout(timeout)):
                raise _plain_text_failure(self.host, self.port, timeout) from None
            raise


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


# ---------------------------------------------------------------- Redis Cluster

_CLUSTER_ERRORS = (RedisClusterException, ClusterError)


def _translate(exc: BaseException) -> BaseException:
    text = str(exc)
    if isinstance(exc, ClusterError) and "TTL exhausted" in text:
        return ClusterUnavailableError("Redis Cluster kept redirecting or refusing the command (a slot is migrating "
                                       "or failing over; TTL exhausted): retry it, with the same task_id for an enqueue")
    if "TLS handshake with" in text:  # every node refused our TLS: say so, not "unavailable"
        return TLSHandshakeError(text[text.index("TLS handshake with"):])
    if isinstance(exc, SlotNotCoveredError) or "cannot be connected" in text or "No targets" in text:
        return ClusterUnavailableError(f"Redis Cluster unavailable: {text}")
    return exc


class _ClusterPipelineFixes:
    """What fastq needs from a cluster pipeline that redis-py refuses: EVALSHA (routed by its
    keys, like any keyed command), SCRIPT LOAD (sent to every primary), MGET of one slot and
    DEL of several keys (one DEL per key)."""

    def evalsha(self, sha, numkeys, *keys_and_args):  # type: ignore[no-untyped-def]
        if int(numkeys) < 1:
            raise RedisClusterException("fastq: a script call on Redis Cluster needs at least one key")
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def mget(self, keys, *args):  # type: ignore[no-untyped-def]
        names = list(keys) if isinstance(keys, (list, tuple)) else [keys]
        names += list(args)
        return self.execute_command("MGET", *names)

    def script_load(self, script):  # type: ignore[no-untyped-def]
        loads = self.__dict__.setdefault("_fastq_loads", [])
        loads.append((self._fastq_position(), script))
        return self

    def delete(self, *names):  # type: ignore[no-untyped-def]
        merged = self.__dict__.setdefault("_fastq_merges", [])
        start = self._fastq_position()
        for name in names:
            self.execute_command("DEL", name)
        merged.append((start, len(names)))
        return self

    def _fastq_position(self) -> int:
        """Index in the caller's reply list of the next queued call."""
        loads = self.__dict__.get("_fastq_loads", [])
        merges = self.__dict__.get("_fastq_merges", [])
        return len(self) + len(loads) - sum(n - 1 for _, n in merges)

    def _fastq_merge(self, replies: list, loaded: list) -> list:
        merges = self.__dict__.pop("_fastq_merges", [])
        out: list = []
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
    def execute(self, raise_on_error=True):  # type: ignore[no-untyped-def]
        loads = self.__dict__.pop("_fastq_loads", [])
        try:
            loaded = [(pos, self._fastq_client.script_load(src)) for pos, src in loads]
            replies = super().execute(raise_on_error=raise_on_error) if len(self) else []  # type: ignore[misc]
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc
        return self._fastq_merge(list(replies), loaded)


class _AsyncClusterPipeline(_ClusterPipelineFixes):
    async def execute(self, raise_on_error=True, allow_redirections=True):  # type: ignore[no-untyped-def]
        loads = self.__dict__.pop("_fastq_loads", [])
        try:
            loaded = [(pos, await self._fastq_client.script_load(src)) for pos, src in loads]
            if len(self):
                replies = await super().execute(raise_on_error, allow_redirections)  # type: ignore[misc]
            else:
                replies = []
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc
        return self._fastq_merge(list(replies), loaded)


def _pipeline_class(mixin: type, base: type) -> type:
    key = ("cluster-pipe", mixin, base)
    if key not in _class_cache:
        _class_cache[key] = type(f"Fastq{base.__name__}", (mixin, base), {})
    return _class_cache[key]


class AsyncRedisCluster(redis.asyncio.cluster.RedisCluster):
    """redis-py's asyncio ``RedisCluster`` with fastq's connection class (TLS, hiredis packing),
    pipelines that accept script calls, and transient cluster errors as ``ClusterUnavailableError``
    (a ``redis.ConnectionError``) so that fastq's retry loops handle them."""

    _fastq_connection_class: Any = None

    def __init__(self, *args: Any, connection_class: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if connection_class is not None:
            self._fastq_connection_class = connection_class
            self.connection_kwargs["connection_class"] = connection_class
            for node in self.startup_nodes:
                node.connection_class = connection_class
            for node in self.nodes_manager.startup_nodes.values():
                node.connection_class = connection_class

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc

    async def initialize(self, *args: Any, **kwargs: Any) -> "AsyncRedisCluster":
        try:
            return await super().initialize(*args, **kwargs)
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = _pipeline_class(_AsyncClusterPipeline, type(pipe))
        pipe._fastq_client = self
        return pipe

    def plain_node_client(self, index: int = 0) -> redis.asyncio.Redis:
        """A plain client to one node (for pub/sub: PUBLISH reaches every node of a cluster).
        ``index`` rotates over the known nodes, so a retry after a failure picks another."""
        nodes = list(self.nodes_manager.nodes_cache.values()) or list(self.nodes_manager.startup_nodes.values())
        primaries = [n for n in nodes if getattr(n, "server_type", None) == "primary"] or nodes
        node = primaries[index % len(primaries)]
        pool = redis.asyncio.ConnectionPool(connection_class=node.connection_class, host=node.host,
                                            port=node.port, **_node_kwargs(node.connection_kwargs))
        return redis.asyncio.Redis.from_pool(pool)


def _node_kwargs(kwargs: dict) -> dict:
    skip = {"connection_class", "host", "port", "response_callbacks", "himport_registry", "max_connections"}
    return {k: v for k, v in kwargs.items() if k not in skip}


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
            return super().execute_command(*args, **kwargs)
        except _CLUSTER_ERRORS as exc:
            raise _translate(exc) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        self._fastq_ready()
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = _pipeline_class(_SyncClusterPipeline, type(pipe))
        pipe._fastq_client = self
        return pipe

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


# ---------------------------------------------------------------- building clients

def _kwargs(opt: Any, overrides: dict) -> dict:
    """Caller defaults (e.g. the worker's fail-fast timeouts) overridden by what the option sets."""
    out = dict(overrides)
    for name in ("username", "password", "socket_timeout", "socket_connect_timeout", "max_connections"):
        value = getattr(opt, name, None)
        if value is not None:
            out[name] = value
    return out


def _durability_override(opt: Any, overrides: dict) -> Any:
    if "durability" in overrides:
        durability = overrides.pop("durability")
        if durability not in DURABILITY:
            raise ConnectionConfigError(f"durability must be None or 'replicated', got {durability!r}")
        if isinstance(opt, RedisClusterClientOpt):
            if durability:
                raise ConnectionConfigError("durability='replicated' is not supported on Redis Cluster")
            return opt
        if durability != opt.durability:
            opt = replace(opt, durability=durability)
    return opt


def sync_client(target: Any, **overrides: Any) -> Any:
    """A ``redis.Redis`` (or fastq's ``SyncRedisCluster``) for a URL or option object. Nothing
    connects until the first command. ``overrides`` are redis-py keyword arguments used as
    defaults, plus ``durability`` (``None`` ignores the option's durability)."""
    opt = _durability_override(as_options(target), overrides)
    if isinstance(opt, RedisClusterClientOpt):
        return _sync_cluster(opt, overrides)
    if isinstance(opt, RedisFailoverClientOpt):
        return _sync_sentinel(opt, overrides)
    kwargs = _kwargs(opt, overrides)
    if opt.network == "unix":
        cls = redis.connection.UnixDomainSocketConnection
        kwargs["path"] = opt.addr
    else:
        cls = _connection_class(redis.connection.Connection, opt.tls, asyncio=False)
        kwargs["host"], kwargs["port"] = opt.host_port
    pool = redis.ConnectionPool(connection_class=cls, db=opt.db, **kwargs)
    return _redis_class(redis.Redis, opt, asyncio=False).from_pool(pool)


def async_client(target: Any, **overrides: Any) -> Any:
    """``sync_client`` for asyncio: a ``redis.asyncio.Redis`` (or fastq's ``AsyncRedisCluster``)."""
    opt = _durability_override(as_options(target), overrides)
    if isinstance(opt, RedisClusterClientOpt):
        return _async_cluster(opt, overrides)
    if isinstance(opt, RedisFailoverClientOpt):
        return _async_sentinel(opt, overrides)
    kwargs = _kwargs(opt, overrides)
    if opt.network == "unix":
        cls = _connection_class(redis.asyncio.connection.UnixDomainSocketConnection, None, asyncio=True)
        kwargs["path"] = opt.addr
    else:
        cls = _connection_class(redis.asyncio.connection.Connection, opt.tls, asyncio=True)
        kwargs["host"], kwargs["port"] = opt.host_port
    pool = redis.asyncio.ConnectionPool(connection_class=cls, db=opt.db, **kwargs)
    return _redis_class(redis.asyncio.Redis, opt, asyncio=True).from_pool(pool)


def _sentinel_kwargs(opt: RedisFailoverClientOpt, overrides: dict) -> dict:
    out = {k: v for k, v in overrides.items() if k in ("socket_timeout", "socket_connect_timeout")}
    for name in ("socket_timeout", "socket_connect_timeout"):
        if getattr(opt, name) is not None:
            out[name] = getattr(opt, name)
    out.setdefault("socket_timeout", 2.0)
    out.setdefault("socket_connect_timeout", 2.0)
    if opt.sentinel_username is not None:
        out["username"] = opt.sentinel_username
    if opt.sentinel_password is not None:
        out["password"] = opt.sentinel_password
    return out


def _sync_sentinel(opt: RedisFailoverClientOpt, overrides: dict) -> Any:
    skw = _sentinel_kwargs(opt, overrides)
    sentinel = redis.sentinel.Sentinel([], sentinel_kwargs=skw)
    plain = _connection_class(redis.connection.Connection, opt.tls, asyncio=False)
    sentinel.sentinels = [redis.Redis.from_pool(redis.ConnectionPool(connection_class=plain, host=h, port=p, **skw))
                          for h, p in opt.sentinels()]
    managed = _connection_class(redis.sentinel.SentinelManagedConnection, opt.tls, asyncio=False)
    kwargs = _kwargs(opt, overrides)
    if "retry" not in kwargs:  # redis-py gives Sentinel clients no retry; a failover needs a few
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        kwargs["retry"] = Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), 10)
    client = sentinel.master_for(opt.master_name, redis_class=_redis_class(redis.Redis, opt, asyncio=False),
                                 connection_class=managed, db=opt.db, **kwargs)
    client._fastq_sentinel = sentinel
    return client


def _async_sentinel(opt: RedisFailoverClientOpt, overrides: dict) -> Any:
    skw = _sentinel_kwargs(opt, overrides)
    sentinel = redis.asyncio.sentinel.Sentinel([], sentinel_kwargs=skw)
    plain = _connection_class(redis.asyncio.connection.Connection, opt.tls, asyncio=True)
    sentinel.sentinels = [
        redis.asyncio.Redis.from_pool(redis.asyncio.ConnectionPool(connection_class=plain, host=h, port=p, **skw))
        for h, p in opt.sentinels()]
    managed = _connection_class(redis.asyncio.sentinel.SentinelManagedConnection, opt.tls, asyncio=True)
    kwargs = _kwargs(opt, overrides)
    if "retry" not in kwargs:  # as for the sync client: READONLY or a lost master is retried, reconnecting
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff

        kwargs["retry"] = Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), 10)
    client = sentinel.master_for(opt.master_name, redis_class=_redis_class(redis.asyncio.Redis, opt, asyncio=True),
                                 connection_class=managed, db=opt.db, **kwargs)
    client._fastq_sentinel = sentinel
    return client


def _sync_cluster(opt: RedisClusterClientOpt, overrides: dict) -> Any:
    kwargs = _kwargs(opt, overrides)
    retry = kwargs.pop("retry", None)
    kwargs.pop("maint_notifications_config", None)
    nodes = opt.nodes()
    cls = _connection_class(redis.connection.Connection, opt.tls, asyncio=False)
    host, port = nodes[0]
    # redis-py builds each node's pool from our connection class only on its from-URL path
    client = SyncRedisCluster(url=f"redis://{_fmt_addr(host, port)}", connection_class=cls,
                              startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in nodes[1:]],
                              **({"retry": retry} if retry is not None else {}), **kwargs)
    if opt.max_redirects is not None:
        client.__dict__["RedisClusterRequestTTL"] = opt.max_redirects
    return client


def _async_cluster(opt: RedisClusterClientOpt, overrides: dict) -> Any:
    kwargs = _kwargs(opt, overrides)
    cls = _connection_class(redis.asyncio.connection.Connection, opt.tls, asyncio=True)
    client = AsyncRedisCluster(startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in opt.nodes()],
                               connection_class=cls, **kwargs)
    if opt.max_redirects is not None:
        client.RedisClusterRequestTTL = opt.max_redirects
    return client


def pubsub_client(client: Any, attempt: int = 0) -> tuple[Any, bool]:
    """The client to subscribe with, and whether the caller must close it: on a cluster a plain
    client to one node (a new one per ``attempt``), else ``client`` itself."""
    if isinstance(client, AsyncRedisCluster):
        return client.plain_node_client(attempt), True
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        nodes = list(client.nodes_manager.nodes_cache.values()) or list(client.nodes_manager.startup_nodes.values())
        node = nodes[attempt % len(nodes)]
        pool = redis.asyncio.ConnectionPool(connection_class=node.connection_class, host=node.host, port=node.port,
                                            **_node_kwargs(node.connection_kwargs))
        return redis.asyncio.Redis.from_pool(pool), True
    return client, False


def with_tls(url: str, ca: Optional[str] = None, cert: Optional[str] = None, key: Optional[str] = None,
             server_name: Optional[str] = None) -> str:
    """``url`` with TLS options added as query options (what ``--tls-ca`` and friends do), checked.

    The URL must use a TLS scheme (``rediss://``, ``rediss+sentinel://``, ``rediss+cluster://``):
    adding a CA to a plain-text URL is refused rather than silently ignored.
    """
    given = [(k, v) for k, v in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key),
                                 ("tls_server_name", server_name)) if v]
    opt = parse_url(url)
    if not given:
        return url
    if opt.tls is None:
        raise ConnectionConfigError(f"TLS options ({', '.join(k for k, _ in given)}) need a TLS URL "
                                    f"(rediss://, rediss+sentinel://, rediss+cluster://), got {redact(url)!r}")
    present = {k for k, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True)}
    for k, _ in given:
        if k in present or {"tls_ca": "ssl_ca_certs", "tls_cert": "ssl_certfile", "tls_key": "ssl_keyfile"}.get(k) in present:
            raise ConnectionConfigError(f"{k} is given both in the URL and as an option")
    merged = url + ("&" if "?" in url else "?") + "&".join(f"{k}={quote(os.fspath(v), safe='/:')}" for k, v in given)
    parse_url(merged)  # reads and checks the files
    return merged


# ---------------------------------------------------------------- fatal or transient (start-up checks)

# getaddrinfo: the name does not exist (EAI_NONAME) or has no address (EAI_NODATA); EAI_AGAIN
# ("Temporary failure in name resolution") and the rest are left to retries.
_EAI_FATAL = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)}
_DNS_FATAL_TEXT = ("name or service not known", "no address associated with hostname",
                   "nodename nor servname provided")
_CONNECT_ERROR_RE = re.compile(r"Error -?\d+ connecting to (\S+?)\.\s")
_ACL_HINT = ("grant the ACL user the commands fastq needs (fastq.connection.ACL_WORKER / ACL_PRODUCER / "
             "ACL_READONLY)")


def _chain(exc: BaseException) -> list:
    """``exc`` and what caused it (``raise ... from``, or raised while handling), oldest last."""
    out: list = []
    while exc is not None and len(out) < 8 and all(exc is not seen for seen in out):
        out.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
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


# ---------------------------------------------------------------- least-privilege ACL users (Redis >= 7)

# ``ACL SETUSER <name> on >PASSWORD`` followed by one of these (README, "Redis Cluster, Sentinel,
# TLS and ACLs"; tests/test_connection.py runs each role under its user). Redis 7 checks the keys
# and channels of commands *inside* scripts, so these hold for fastq's Lua too.
ACL_WORKER = ("resetkeys ~asynq:* resetchannels &asynq:* -@all +@read +@write -@dangerous "
              "+evalsha +script|load +subscribe +unsubscribe +publish +ping +select +time +info")
ACL_PRODUCER = ("resetkeys ~asynq:* resetchannels &asynq:{*}:fastq_notify -@all "
                "+evalsha +script|load +ping +select +time +exists +llen +sadd +hset +lpush +zadd +publish "
                "(~asynq:{*}:unique:* +set +del)")
ACL_READONLY = ("resetkeys ~asynq:* resetchannels -@all +@read -@dangerous "
                "+evalsha +script|load +ping +select +time +info")
