"""Option objects mirroring Go Asynq's RedisClientOpt / RedisFailoverClientOpt / RedisClusterClientOpt,
and TLSConfig. Values are checked at construction (``ConnectionConfigError`` naming the field)."""
from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Optional, Union
from urllib.parse import quote

from fastq import _validate
from fastq.redis.errors import ConnectionConfigError

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 5.0  # seconds, when socket_connect_timeout is not set
MASK = "***"
Address = Union[str, tuple[str, int]]  # "host:port", "[v6]:port", "host" or (host, port)
_SECRET_QUERY = {"password", "sentinel_password"}

# ---------------------------------------------------------------- option objects

def _fail(message: str) -> ConnectionConfigError:
    return ConnectionConfigError(message)


def _seconds(name: str, value: Any) -> float:
    return float(_validate.number(name, value, 0, above=True, what="a number of seconds", error=_fail))


def _optional_seconds(name: str, value: Any) -> Optional[float]:
    return None if value is None else _seconds(name, value)


def _int(name: str, value: Any, minimum: int) -> int:
    result: int = _validate.number(name, value, minimum, integer=True, error=_fail)
    return result


def _optional_int(name: str, value: Any, minimum: int) -> Optional[int]:
    return None if value is None else _int(name, value, minimum)


def _optional_text(name: str, value: Any) -> Optional[str]:
    return None if value is None else _text(name, value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"{name} must be a str, got {type(value).__name__}")
    return value


def _addr(name: str, value: Any, default_port: int) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"host"`` or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
        host = _text(name, host)
        port = _int(name, port, 1)
    else:
        text = _text(name, value)
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
            raise _fail(f"{what}: Port could not be cast to integer value as {port_text!r} "
                        "(a port is a number 1-65535)")
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
        context: ssl.SSLContext = self._context  # built by __post_init__
        return context

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

    if TYPE_CHECKING:  # fields of the option classes (durability and replicas: not the cluster's)
        username: Optional[str]
        password: Optional[str]
        tls: Optional[TLSConfig]
        socket_timeout: Optional[float]
        socket_connect_timeout: Optional[float]
        max_connections: Optional[int]
        durability: Optional[str]
        replicas: int
        replica_timeout: float

        def _url(self, reveal: bool) -> str: ...

    _secret_fields = ("password", "sentinel_password")

    def _check_common(self) -> None:
        for name in ("username", "password"):
            _optional_text(name, getattr(self, name))
        if self.tls is not None and not isinstance(self.tls, TLSConfig):
            raise _fail(f"tls must be a fastq.connection.TLSConfig, got {type(self.tls).__name__}")
        object.__setattr__(self, "socket_timeout", _optional_seconds("socket_timeout", self.socket_timeout))
        object.__setattr__(self, "socket_connect_timeout",
                           _optional_seconds("socket_connect_timeout", self.socket_connect_timeout))
        _optional_int("max_connections", self.max_connections, 1)

    def _check_durability(self) -> None:
        if self.durability not in DURABILITY:
            raise _fail(f"durability must be None or 'replicated', got {self.durability!r}")
        _int("replicas", self.replicas, 1)
        object.__setattr__(self, "replica_timeout", _seconds("replica_timeout", self.replica_timeout))

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
        _int("db", self.db, 0)
        if self.network not in ("tcp", "unix"):
            raise _fail(f"network must be 'tcp' or 'unix', got {self.network!r}")
        if self.network == "unix":
            path = _text("addr", self.addr)
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
    sentinel_addrs: tuple[Address, ...] = ()
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
        _int("db", self.db, 0)
        for name in ("sentinel_username", "sentinel_password"):
            _optional_text(name, getattr(self, name))
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
        return f"{scheme}://{auth}{','.join(_fmt_addr(h, p) for h, p in self.sentinels())}/{self.db}{_query(q, reveal)}"


@dataclass(frozen=True, repr=False)
class RedisClusterClientOpt(_Opt):
    """A Redis Cluster (Asynq's ``RedisClusterClientOpt``): ``addrs`` are some of its nodes
    (the client learns the rest). Each queue lives in one slot (``{queue}`` hash tags)."""

    addrs: tuple[Address, ...] = ()
    username: Optional[str] = None
    password: Optional[str] = None
    tls: Optional[TLSConfig] = None
    socket_timeout: Optional[float] = None
    socket_connect_timeout: Optional[float] = None
    max_connections: Optional[int] = None
    max_redirects: Optional[int] = None

    def __post_init__(self) -> None:
        self._check_common()
        _optional_int("max_redirects", self.max_redirects, 1)
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
        nodes = ",".join(_fmt_addr(h, p) for h, p in self.nodes())
        return f"{scheme}://{_userinfo(self.username, self.password, reveal)}{nodes}{_query(q, reveal)}"


RedisConnOpt = Union[RedisClientOpt, RedisFailoverClientOpt, RedisClusterClientOpt]
OPTION_TYPES = (RedisClientOpt, RedisFailoverClientOpt, RedisClusterClientOpt)
