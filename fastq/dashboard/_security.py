"""The dashboard's configuration and its gate: sessions, the bearer token, the same-origin and
CSRF checks, the form body limits and the trusted-proxy rule (the security model is described
in ``fastq/dashboard/app.py``)."""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence, Union, overload
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

MIN_TOKEN_LENGTH = 16
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SESSION_COOKIE = "fastq_session"
LOGIN_COOKIE = "fastq_login"
MAX_SESSIONS = 10_000
MAX_FORM_BYTES = 16 * 1024

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass
class DashboardConfig:
    """How the dashboard runs. ``redis``: a URL or a ``redis.asyncio.Redis`` (default
    ``$FASTQ_REDIS_URL``). ``token`` is required unless ``auth`` is False."""

    redis: Any = None
    token: Optional[str] = None
    auth: bool = True
    read_only: bool = False
    show_payloads: bool = False
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    refresh_seconds: float = 2.0
    session_ttl: float = 12 * 3600.0
    login_delay: float = 0.3  # seconds added to a failed login (slows guessing)
    # addresses (IPs or networks, "*" for any) whose X-Forwarded-Proto is believed: a TLS-terminating proxy;
    # a comma-separated str is accepted too (a tuple after __post_init__)
    forwarded_allow_ips: Union[tuple[str, ...], str] = ("127.0.0.1",)

    def __post_init__(self) -> None:
        if self.auth:
            if not self.token:
                raise ValueError("the dashboard needs a token (FASTQ_DASHBOARD_TOKEN or a token file), "
                                 "or authentication turned off explicitly")
            if len(self.token) < MIN_TOKEN_LENGTH:
                raise ValueError(f"the dashboard token must be at least {MIN_TOKEN_LENGTH} characters "
                                 f"(got {len(self.token)}); e.g. python -c 'import secrets; "
                                 f"print(secrets.token_urlsafe(32))'")
        if not self.allowed_hosts:
            raise ValueError("allowed_hosts must name at least one host")
        if not (0.2 <= self.refresh_seconds <= 3600):
            raise ValueError("refresh_seconds must be between 0.2 and 3600")
        self.allowed_hosts = tuple(h.lower().strip("[]") for h in self.allowed_hosts)
        if isinstance(self.forwarded_allow_ips, str):
            self.forwarded_allow_ips = tuple(self.forwarded_allow_ips.split(","))
        self.forwarded_allow_ips = tuple(a.strip() for a in self.forwarded_allow_ips if a.strip())
        trusted_networks(self.forwarded_allow_ips)  # refuses a bad entry now, not at the first request


def trusted_networks(entries: Sequence[str]) -> Optional[tuple[Network, ...]]:
    """The networks of ``forwarded_allow_ips``; None when it holds ``*`` (any address)."""
    if not entries:
        raise ValueError("forwarded_allow_ips must name at least one address (127.0.0.1 if no proxy runs "
                         "on this host)")
    if "*" in entries:
        return None
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"forwarded_allow_ips: {entry!r} is not an IP address or network "
                             "(e.g. 127.0.0.1, 10.0.0.0/8, ::1, or *)") from None
    return tuple(networks)


@dataclass
class Session:
    csrf: str
    expires: float
    flash: list[str] = field(default_factory=list)  # messages shown once, on the next page


class LoginRequired(Exception):
    """Raised by the gate when a request has neither a session nor an accepted bearer token."""


class Gate:
    """Who may see and change what: server-side sessions, the bearer token for GETs, the
    trusted-proxy scheme, the same-origin and CSRF checks of mutations, read-only mode."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.sessions: dict[str, Session] = {}
        self._proxies = trusted_networks(config.forwarded_allow_ips)

    def _session(self, request: Request) -> Optional[Session]:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            return None
        session = self.sessions.get(sid)
        if session is None:
            return None
        if session.expires < time.time():
            del self.sessions[sid]
            return None
        return session

    def _new_session(self) -> tuple[str, Session]:
        now = time.time()
        if len(self.sessions) >= MAX_SESSIONS:
            for sid in [s for s, v in self.sessions.items() if v.expires < now]:
                del self.sessions[sid]
            while len(self.sessions) >= MAX_SESSIONS:  # oldest first (dicts keep insertion order)
                del self.sessions[next(iter(self.sessions))]
        sid = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=now + self.config.session_ttl)
        self.sessions[sid] = session
        return sid, session

    def _bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        token = self.config.token
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(value.strip().encode(), token.encode())

    def _scheme(self, request: Request) -> str:
        """The scheme the browser used: the connection's, or a trusted proxy's ``X-Forwarded-Proto``."""
        proto = request.headers.get("x-forwarded-proto")
        if proto is not None and self._from_proxy(request):
            proto = proto.split(",")[0].strip().lower()  # a chain of proxies: the first saw the browser
            if proto in ("http", "https"):
                return proto
        return request.url.scheme

    def _from_proxy(self, request: Request) -> bool:
        if self._proxies is None:
            return True
        client = request.client
        if client is None:  # e.g. a Unix socket
            return False
        try:
            addr = ipaddress.ip_address(client.host.strip("[]"))
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._proxies)

    def _set_cookie(self, request: Request, response: Response, sid: str) -> None:
        response.set_cookie(SESSION_COOKIE, sid, max_age=int(self.config.session_ttl), httponly=True,
                            samesite="strict", secure=self._scheme(request) == "https", path="/")

    def _same_origin(self, request: Request) -> Optional[str]:
        """None when the request comes from a page of this dashboard, else why not."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return None if site == "same-origin" else f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = request.headers.get("origin")
        if origin is None:
            return "cross-origin check failed: the request has no Origin header"
        expected = f"{self._scheme(request)}://{request.headers.get('host', '')}"
        if origin.lower() != expected.lower():
            return f"cross-origin request refused (Origin {origin!r} is not {expected!r})"
        return None

    async def _form(self, request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            raise HTTPException(413, f"form body larger than {MAX_FORM_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(413, f"form body larger than {MAX_FORM_BYTES} bytes")
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=50)
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "the form body is not valid URL-encoded UTF-8") from None
        return {k: v[-1] for k, v in parsed.items()}

    @overload
    async def guard(self, request: Request, mutate: Literal[False]) -> tuple[Optional[Session], dict[str, str]]:
        ...

    @overload
    async def guard(self, request: Request, mutate: Literal[True]) -> tuple[Session, dict[str, str]]:
        ...

    async def guard(self, request: Request, mutate: bool) -> tuple[Optional[Session], dict[str, str]]:
        """Authenticate; for a mutation also check origin, CSRF token and read-only mode.
        Returns the session (None for bearer-token GETs) and the form (mutations)."""
        session = self._session(request)
        if session is None and not self.config.auth and not mutate:
            sid, session = self._new_session()
            request.state.new_sid = sid
        if session is None:
            if not mutate and self._bearer_ok(request):
                request.state.bearer = True
                return None, {}
            raise LoginRequired()
        if not mutate:
            return session, {}
        why = self._same_origin(request)
        if why is not None:
            raise HTTPException(403, why)
        form = await self._form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
        if self.config.read_only:
            raise HTTPException(403, "the dashboard is read-only (started with --read-only)")
        return session, form

    async def _logout_guard(self, request: Request) -> None:
        """Logging out is allowed in read-only mode, with the same origin and CSRF checks."""
        session = self._session(request)
        if session is None:
            raise LoginRequired()
        why = self._same_origin(request)
        if why is not None:
            raise HTTPException(403, why)
        form = await self._form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
