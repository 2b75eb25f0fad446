"""Redis URLs: every form fastq reads (see ``fastq.redis``), parsed into option objects; redaction."""
from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import parse_qsl, unquote

from fastq import _validate
from fastq.redis.errors import ConnectionConfigError
from fastq.redis.options import (
    DEFAULT_PORT,
    DEFAULT_SENTINEL_PORT,
    MASK,
    OPTION_TYPES,
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisConnOpt,
    RedisFailoverClientOpt,
    TLSConfig,
    _fmt_addr,
    _split_host_port,
)

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
Query = dict[str, str]  # the query options not read yet
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


def _db(url: str, path: str, opts: Query) -> int:
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


def _number(url: str, opts: Query, key: str) -> Optional[float]:
    text = opts.pop(key, None)
    if text is None:
        return None
    return float(_validate.number_text(key, text, error=lambda why: _url_error(url, why)))


def _integer(url: str, opts: Query, key: str) -> Optional[int]:
    text = opts.pop(key, None)
    if text is None:
        return None
    return int(_validate.number_text(key, text, integer=True, error=lambda why: _url_error(url, why)))


def _common_from(url: str, opts: Query) -> dict[str, Any]:
    out: dict[str, Any] = {"socket_timeout": _number(url, opts, "socket_timeout"),
           "socket_connect_timeout": _number(url, opts, "socket_connect_timeout"),
           "max_connections": _integer(url, opts, "max_connections")}
    if "durability" in opts or "replicas" in opts or "replica_timeout" in opts:
        out["durability"] = opts.pop("durability", None) or None
        replicas = _integer(url, opts, "replicas")
        timeout = _number(url, opts, "replica_timeout")
        if out["durability"] is None:
            raise _url_error(url, "replicas / replica_timeout need durability=replicated")
        out["replicas"] = 1 if replicas is None else replicas
        out["replica_timeout"] = 1.0 if timeout is None else timeout
    return out


def _tls_from(url: str, scheme: str, opts: Query) -> Optional[TLSConfig]:
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


def _parse_single(url: str, hosts: str, path: str, username: Optional[str], password: Optional[str],
                  opts: Query, tls: Optional[TLSConfig], common: dict[str, Any]) -> RedisClientOpt:
    (addr,) = _hosts(url, hosts, DEFAULT_PORT, many=False)
    db = _db(url, path, opts)
    return RedisClientOpt(addr=addr, username=username, password=password, db=db, tls=tls,
                          **{k: v for k, v in common.items() if v is not None})


def _parse_unix(url: str, scheme: str, hosts: str, path: str, username: Optional[str], password: Optional[str],
                opts: Query) -> RedisClientOpt:
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


def _parse_sentinel(url: str, scheme: str, hosts: str, path: str, username: Optional[str], password: Optional[str],
                    opts: Query, tls: Optional[TLSConfig], common: dict[str, Any]) -> RedisFailoverClientOpt:
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


def _parse_cluster(url: str, hosts: str, path: str, username: Optional[str], password: Optional[str],
                   opts: Query, tls: Optional[TLSConfig], common: dict[str, Any]) -> RedisClusterClientOpt:
    addrs = _hosts(url, hosts, DEFAULT_PORT, many=True)
    if path.strip("/") not in ("", "0"):
        raise _url_error(url, "Redis Cluster has only database 0")
    if common.get("durability"):
        raise _url_error(url, "durability=replicated is not supported on Redis Cluster (WAIT must follow the write "
                              "on the same node connection); use min-replicas-to-write on the nodes instead")
    return RedisClusterClientOpt(addrs=tuple(addrs), username=username, password=password, tls=tls,
                                 max_redirects=_integer(url, opts, "max_redirects"),
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
