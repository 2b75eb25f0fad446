"""The dashboard's ASGI application: server-rendered pages over ``fastq.AsyncInspector``.

Security model:

* **Authentication.** A token (``FASTQ_DASHBOARD_TOKEN`` or a file, never argv) is typed into
  ``/login`` once; the browser then holds an opaque session cookie (HttpOnly, SameSite=Strict,
  kept server-side, 12 h). Scripts may send ``Authorization: Bearer <token>`` on GET requests.
  ``auth=False`` (``--no-auth``) must be asked for and is refused off loopback.
* **Mutations** are POST forms only, and each one must pass: a valid session, the same-origin
  check (``Sec-Fetch-Site: same-origin``, else an ``Origin`` equal to this server's), and the
  session's CSRF token. A bearer token does not allow mutations. ``read_only`` refuses them all.
* **Host header** must name an allowed host (loopback names by default), against DNS rebinding.
* **Cookies** are ``Secure`` when the request came over https: directly, or through a TLS proxy whose
  ``X-Forwarded-Proto`` is believed only from ``forwarded_allow_ips`` (127.0.0.1 by default, like
  uvicorn's ``--forwarded-allow-ips``); the same-origin check uses that scheme too.
* **Headers**: a strict Content-Security-Policy (no inline script or style), ``nosniff``,
  ``frame-ancestors 'none'``, ``Referrer-Policy: same-origin``, ``Cache-Control: no-store``.
* **Payloads and results** are not shown unless ``show_payloads`` is set (sizes are).

Errors are pages (or JSON under ``/api/``) with a clear message and a 4xx/5xx status:
400 bad parameter, 401 not logged in, 403 origin/CSRF/read-only, 404 unknown queue, task or
page, 409 a state that forbids the action, 413/415 bad form body, 503 Redis unreachable.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import secrets
import time
from datetime import date
from pathlib import Path
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Optional
from urllib.parse import urlencode

import redis.exceptions
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from fastq.dashboard import charts
from fastq.dashboard._helpers import local_path, preview, safe_next, seconds, when
from fastq.dashboard._security import (
    LOGIN_COOKIE,
    LOOPBACK_HOSTS,
    MIN_TOKEN_LENGTH,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    DashboardConfig,
    Gate,
    LoginRequired,
    Session,
)
from fastq.errors import (
    CorruptDataError,
    InvalidOptionError,
    QueueNotFoundError,
    QueuePausedStateError,
    TaskNotFoundError,
    TaskStateError,
)
from fastq.inspect import AsyncInspector
from fastq.inspect._common import LIST_STATES

__all__ = ["DashboardConfig", "create_app", "MIN_TOKEN_LENGTH", "LOOPBACK_HOSTS"]

HERE = Path(__file__).resolve().parent
MAX_PAGE_SIZE = 1000
PAGE_SIZES = (10, 30, 100, 500)
MAX_NAME = 1024  # longest queue name / task ID / entry ID accepted in a request
HISTORY_DAYS = 14
QUEUE_ACTIONS = ("pause", "unpause")
TASK_ACTIONS = ("run", "archive", "delete", "cancel")


class Dashboard(Gate):
    """The pages and actions, behind the checks of ``Gate`` (``fastq/dashboard/_security.py``)."""

    def __init__(self, config: DashboardConfig) -> None:
        super().__init__(config)
        self._inspector: Optional[AsyncInspector] = None
        self._owns_client = False
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                               autoescape=select_autoescape(default=True, default_for_string=True))
        self.env.filters["when"] = when
        self.env.filters["num"] = _thousands
        self.env.filters["seconds"] = seconds
        self.env.globals["qs"] = _query
        self.static: dict[str, tuple[bytes, str]] = {
            "dashboard.css": ((HERE / "static" / "dashboard.css").read_bytes(), "text/css; charset=utf-8"),
            "dashboard.js": ((HERE / "static" / "dashboard.js").read_bytes(), "text/javascript; charset=utf-8"),
        }

    @property
    def inspector(self) -> AsyncInspector:
        if self._inspector is None:
            from fastq.redis.facade import async_client

            target = self.config.redis
            self._owns_client = target is None or isinstance(target, str)
            if self._owns_client:  # a page must end: no endless waits on Redis
                client = async_client(target, socket_timeout=10.0, socket_connect_timeout=5.0)
            else:
                client = async_client(target)
            self._inspector = AsyncInspector(client)
        return self._inspector

    async def close(self) -> None:
        if self._inspector is not None:
            if self._owns_client:  # a client given by the caller stays theirs to close
                await self._inspector.redis.aclose()
            self._inspector = None

    # ------------------------------------------------------------ rendering

    def render(self, request: Request, template: str, session: Optional[Session], status: int = 200,
               **context: Any) -> HTMLResponse:
        flash: list[str] = []
        if session is not None:
            flash, session.flash = session.flash, []
        html = self.env.get_template(template).render(
            request=request, csrf=session.csrf if session else "", flash=flash, cfg=self.config,
            authed=session is not None or getattr(request.state, "bearer", False), path=local_path(request),
            **context)
        response = HTMLResponse(html, status_code=status)
        sid = getattr(request.state, "new_sid", None)
        if sid:
            self._set_cookie(request, response, sid)
        return response

    # ------------------------------------------------------------ pages

    async def login_page(self, request: Request) -> Response:
        if not self.config.auth or self._session(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        nonce = secrets.token_urlsafe(32)
        response = self.render(request, "login.html", None, login_csrf=nonce,
                               next=safe_next(request.query_params.get("next")), status=200,
                               error=request.query_params.get("failed") == "1")
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict",
                            secure=self._scheme(request) == "https", path="/login")
        return response

    async def login(self, request: Request) -> Response:
        if not self.config.auth:
            return RedirectResponse("/", 303)
        why = self._same_origin(request)
        if why is not None:
            raise HTTPException(403, why)
        form = await self._form(request)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not hmac.compare_digest(form.get("csrf", "").encode(), nonce.encode()):
            raise HTTPException(403, "CSRF token missing or wrong: open the login page again")
        next_url = safe_next(form.get("next"))
        token = self.config.token
        if token is None:  # auth is on, so DashboardConfig required a token
            raise RuntimeError("the dashboard has authentication on but no token")
        if not hmac.compare_digest(form.get("token", "").strip().encode(), token.encode()):
            await asyncio.sleep(self.config.login_delay)
            return RedirectResponse("/login?" + urlencode({"next": next_url, "failed": "1"}), 303)
        sid, _ = self._new_session()
        response = RedirectResponse(next_url, 303)
        self._set_cookie(request, response, sid)
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    async def logout(self, request: Request) -> Response:
        await self._logout_guard(request)
        self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = RedirectResponse("/login" if self.config.auth else "/", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def overview(self, request: Request) -> Response:
        session, _ = await self.guard(request, mutate=False)
        ins = self.inspector
        infos = await ins.get_queue_infos()
        histories = await asyncio.gather(*(ins.history(i.queue, HISTORY_DAYS) for i in infos))
        by_day: dict[date, tuple[int, int]] = {}
        for history in histories:
            for d in history:
                p, f = by_day.get(d.date, (0, 0))
                by_day[d.date] = (p + d.processed, f + d.failed)
        days = sorted(by_day.items()) if by_day else []
        redis_info = await ins.redis_info()
        totals = {s: sum(getattr(i, s) for i in infos) for s in
                  ("size", "pending", "active", "scheduled", "retry", "archived", "completed", "aggregating",
                   "processed", "failed")}
        return self.render(request, "overview.html", session, infos=infos, totals=totals,
                           history_svg=charts.daily_bars([(d, p, f) for d, (p, f) in days]),
                           redis={k: redis_info.get(k) for k in ("redis_version", "used_memory_human",
                                                                  "connected_clients", "uptime_in_days")})

    async def queue(self, request: Request) -> Response:
        session, _ = await self.guard(request, mutate=False)
        q = _name(request.query_params.get("q"), "queue (parameter q)")
        ins = self.inspector
        info = await ins.get_queue_info(q)
        history = await ins.history(q, HISTORY_DAYS)
        groups = await ins.groups(q)
        return self.render(request, "queue.html", session, info=info, groups=groups, states=LIST_STATES,
                           history_svg=charts.daily_bars([(d.date, d.processed, d.failed)
                                                          for d in sorted(history, key=lambda d: d.date)]))

    async def tasks(self, request: Request) -> Response:
        session, _ = await self.guard(request, mutate=False)
        params = request.query_params
        q = _name(params.get("q"), "queue (parameter q)")
        state = params.get("state", "pending")
        if state not in LIST_STATES:
            raise HTTPException(400, f"unknown state {state!r}; choose one of: {', '.join(LIST_STATES)}")
        group = params.get("group")
        if state == "aggregating":
            group = _name(group, "group (needed for state aggregating)")
        elif group is not None:
            raise HTTPException(400, f"a group only applies to state 'aggregating', not {state!r}")
        page = _int(params.get("page"), "page", 1, 1, 10**9)
        size = _int(params.get("size"), "size", 30, 1, MAX_PAGE_SIZE)
        ins = self.inspector
        info = await ins.get_queue_info(q)
        if state == "aggregating":
            count = next((g.size for g in await ins.groups(q) if g.group == group), 0)
        else:
            count = getattr(info, state)
        pages = max(1, math.ceil(count / size))
        if page > pages:
            raise HTTPException(404, f"page {page} does not exist: {count:,} {state} task(s) in {q!r} make "
                                     f"{pages:,} page(s) of {size}")
        items = await ins.list_tasks(q, state, page, size, group)
        return self.render(request, "tasks.html", session, info=info, state=state, group=group, page=page,
                           size=size, pages=pages, count=count, items=items, states=LIST_STATES,
                           page_sizes=PAGE_SIZES)

    async def task(self, request: Request) -> Response:
        session, _ = await self.guard(request, mutate=False)
        q = _name(request.query_params.get("q"), "queue (parameter q)")
        tid = _name(request.query_params.get("id"), "task ID (parameter id)")
        t = await self.inspector.get_task_info(q, tid)
        try:
            chord = await self.inspector.get_chord(q, tid)  # the task is a chord's callback
        except TaskNotFoundError:
            chord = None
        return self.render(request, "task.html", session, t=t, chord=chord,
                           payload=preview(t.payload) if self.config.show_payloads else None,
                           result=preview(t.result) if self.config.show_payloads and t.result is not None
                           else None)

    async def chord(self, request: Request) -> Response:
        """A chord's progress (``fastq.chord``) by its callback's task ID and queue."""
        session, _ = await self.guard(request, mutate=False)
        q = _name(request.query_params.get("q"), "queue (parameter q)")
        cid = _name(request.query_params.get("id"), "chord ID (parameter id)")
        return self.render(request, "chord.html", session, c=await self.inspector.get_chord(q, cid))

    async def search(self, request: Request) -> Response:
        await self.guard(request, mutate=False)
        tid = _name(request.query_params.get("id"), "task ID (parameter id)").strip()
        queue = request.query_params.get("q") or None
        ins = self.inspector
        queues = [queue] if queue else await ins.queues()
        for q in queues:
            try:
                await ins.get_task_info(q, tid)
            except (TaskNotFoundError, QueueNotFoundError):
                continue
            return RedirectResponse("/task?" + urlencode({"q": q, "id": tid}), 303)
        for q in queues:  # a chord still waiting has no callback task yet
            try:
                await ins.get_chord(q, tid)
            except TaskNotFoundError:
                continue
            return RedirectResponse("/chord?" + urlencode({"q": q, "id": tid}), 303)
        where = f"queue {queue!r}" if queue else f"any of {len(queues)} queue(s)"
        raise HTTPException(404, f"no task with ID {tid!r} in {where}")

    async def servers(self, request: Request) -> Response:
        session, _ = await self.guard(request, mutate=False)
        servers = sorted(await self.inspector.servers(), key=lambda s: (s.host, s.pid))
        return self.render(request, "servers.html", session, servers=servers)

    async def scheduler(self, request: Request) -> Response:
        session, _ = await self.guard(request, mutate=False)
        entries = sorted(await self.inspector.scheduler_entries(), key=lambda e: (e.spec, e.id))
        return self.render(request, "scheduler.html", session, entries=entries)

    async def scheduler_history(self, request: Request) -> Response:
        session, _ = await self.guard(request, mutate=False)
        entry = _name(request.query_params.get("entry"), "entry ID (parameter entry)")
        page = _int(request.query_params.get("page"), "page", 1, 1, 10**9)
        size = _int(request.query_params.get("size"), "size", 30, 1, MAX_PAGE_SIZE)
        events = await self.inspector.list_scheduler_enqueue_events(entry, page, size)
        return self.render(request, "scheduler_history.html", session, entry=entry, events=events, page=page,
                           size=size)

    async def api_queues(self, request: Request) -> Response:
        await self.guard(request, mutate=False)
        infos = await self.inspector.get_queue_infos()
        fields = ("size", "pending", "active", "scheduled", "retry", "archived", "completed", "aggregating",
                  "processed", "failed", "processed_total", "failed_total", "memory_usage")
        body = {"time": time.time(), "queues": [
            {"queue": i.queue, "paused": i.paused, "latency": round(i.latency, 3),
             **{f: getattr(i, f) for f in fields}} for i in infos]}
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def static_file(self, request: Request) -> Response:
        found = self.static.get(request.path_params["name"])
        if found is None:
            raise HTTPException(404, "no such file")
        body, media = found
        return Response(body, media_type=media, headers={"cache-control": "public, max-age=300"})

    # ------------------------------------------------------------ actions

    async def queue_action(self, request: Request) -> Response:
        session, form = await self.guard(request, mutate=True)
        q = _name(form.get("q"), "queue (field q)")
        action = form.get("action")
        if action not in QUEUE_ACTIONS:
            raise HTTPException(400, f"unknown queue action {action!r}; choose one of: {', '.join(QUEUE_ACTIONS)}")
        ins = self.inspector
        await (ins.pause_queue(q) if action == "pause" else ins.unpause_queue(q))
        session.flash.append(f"queue {q} {'paused' if action == 'pause' else 'resumed'}")
        return RedirectResponse(safe_next(form.get("next"), "/queue?" + urlencode({"q": q})), 303)

    async def task_action(self, request: Request) -> Response:
        session, form = await self.guard(request, mutate=True)
        q = _name(form.get("q"), "queue (field q)")
        tid = _name(form.get("id"), "task ID (field id)")
        action = form.get("action")
        if action not in TASK_ACTIONS:
            raise HTTPException(400, f"unknown task action {action!r}; choose one of: {', '.join(TASK_ACTIONS)}")
        ins = self.inspector
        back = "/task?" + urlencode({"q": q, "id": tid})
        if action == "cancel":
            t = await ins.get_task_info(q, tid)
            if t.state.value != "active":
                raise HTTPException(409, f"task {tid} is {t.state.value}, not active: only running tasks can "
                                         "be cancelled")
            receivers = await ins.cancel_processing(tid)
            session.flash.append(f"cancel request for task {tid} sent to {receivers} worker(s)")
        elif action == "run":
            await ins.run_task(q, tid)
            session.flash.append(f"task {tid} moved to pending")
        elif action == "archive":
            await ins.archive_task(q, tid)
            session.flash.append(f"task {tid} archived")
        else:
            await ins.delete_task(q, tid)
            session.flash.append(f"task {tid} deleted")
            back = "/queue?" + urlencode({"q": q})
        return RedirectResponse(safe_next(form.get("next"), back), 303)


# ---------------------------------------------------------------- helpers

def _thousands(n: int) -> str:
    return f"{n:,}"


def _query(**params: Any) -> str:
    """A query string of the parameters that are not None (``qs(q=..., id=...)`` in templates)."""
    return urlencode({k: v for k, v in params.items() if v is not None})


def _name(value: Optional[str], what: str) -> str:
    if value is None or not value.strip():
        raise HTTPException(400, f"missing {what}")
    if len(value) > MAX_NAME:
        raise HTTPException(400, f"{what} is longer than {MAX_NAME} characters")
    return value


def _int(value: Optional[str], what: str, default: int, minimum: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    text = value.strip()
    if not text.isdigit():
        raise HTTPException(400, f"{what} must be a whole number from {minimum} to {maximum:,}, got {value[:40]!r}")
    number = int(text)
    if not minimum <= number <= maximum:
        raise HTTPException(400, f"{what} must be from {minimum} to {maximum:,}, got {number:,}")
    return number


# ---------------------------------------------------------------- the ASGI app

def create_app(config: Optional[DashboardConfig] = None, **kwargs: Any) -> SecurityHeaders:
    """The dashboard as an ASGI app: ``create_app(DashboardConfig(...))`` or keyword arguments of
    ``DashboardConfig``. Serve it with uvicorn (``fastq dashboard`` does)."""
    if config is None:
        config = DashboardConfig(**kwargs)
    elif kwargs:
        raise TypeError("give a DashboardConfig or keyword arguments, not both")
    d = Dashboard(config)

    routes = [
        Route("/", d.overview),
        Route("/login", d.login_page, methods=["GET"]),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/queue", d.queue),
        Route("/tasks", d.tasks),
        Route("/task", d.task),
        Route("/chord", d.chord),
        Route("/search", d.search),
        Route("/servers", d.servers),
        Route("/scheduler", d.scheduler),
        Route("/scheduler/history", d.scheduler_history),
        Route("/api/queues", d.api_queues),
        Route("/action/queue", d.queue_action, methods=["POST"]),
        Route("/action/task", d.task_action, methods=["POST"]),
        Route("/static/{name}", d.static_file),
    ]

    def error_page(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": message}, status_code=status)
        session = d._session(request)
        return d.render(request, "error.html", session, status=status, status_code=status, message=message)

    async def on_http(request: Request, exc: HTTPException) -> Response:
        return error_page(request, exc.status_code, str(exc.detail))

    async def on_login(request: Request, exc: Exception) -> Response:
        if request.method != "GET" or request.url.path.startswith("/api/"):
            return error_page(request, 401, "log in first: open /login (or send Authorization: Bearer <token> "
                                            "on GET requests)")
        return RedirectResponse("/login?" + urlencode({"next": local_path(request)}), 303)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, 404, str(exc.args[0]) if exc.args else "not found")

    async def on_bad(request: Request, exc: Exception) -> Response:
        return error_page(request, 400, str(exc))

    async def on_conflict(request: Request, exc: Exception) -> Response:
        return error_page(request, 409, str(exc))

    async def on_corrupt(request: Request, exc: Exception) -> Response:
        return error_page(request, 500, f"data in Redis is not in Asynq's layout: {exc}")

    async def on_redis(request: Request, exc: Exception) -> Response:
        return error_page(request, 503, f"Redis is not reachable: {type(exc).__name__}: {exc}")

    app = Starlette(routes=routes, exception_handlers={
        HTTPException: on_http,  # type: ignore[dict-item]  # Starlette types every handler as (Request, Exception)
        LoginRequired: on_login,
        QueueNotFoundError: on_not_found,
        TaskNotFoundError: on_not_found,
        InvalidOptionError: on_bad,
        TaskStateError: on_conflict,
        QueuePausedStateError: on_conflict,
        CorruptDataError: on_corrupt,
        redis.exceptions.ConnectionError: on_redis,
        redis.exceptions.TimeoutError: on_redis,
    }, lifespan=_lifespan(d))
    app.state.dashboard = d
    return SecurityHeaders(app, config.allowed_hosts)


def _lifespan(d: Dashboard) -> Callable[[Starlette], AsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await d.close()
    return lifespan


class SecurityHeaders:
    """ASGI middleware: refuse unknown Host headers (DNS rebinding) and add the security
    headers to every response."""

    def __init__(self, app: Starlette, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_hosts = set(allowed_hosts)

    @property
    def dashboard(self) -> Dashboard:
        d: Dashboard = self.app.state.dashboard
        return d

    def _host_ok(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"host":
                host = value.decode("latin-1").lower()
                if host.startswith("["):
                    host = host[1:host.find("]")] if "]" in host else host
                else:
                    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
                return host in self.allowed_hosts or "*" in self.allowed_hosts
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"server"]
                names = {h[0].lower() for h in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        if not self._host_ok(scope):
            body = b"Host header not allowed: start the dashboard with --allowed-host NAME to serve other names"
            await send_with_headers({"type": "http.response.start", "status": 400,
                                     "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                                 (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)
