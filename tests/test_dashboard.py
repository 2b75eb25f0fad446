"""The web dashboard over HTTP: a real uvicorn server on a free port, a real redis-server, and a
small cookie-keeping HTTP client. Covers authentication, the same-origin and CSRF checks on every
mutating endpoint, read-only mode, security headers, bad input (clear 4xx, nothing changed) and
each page and action against data written by real fastq clients and workers.
"""
from __future__ import annotations

import asyncio
import html
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")
uvicorn = pytest.importorskip("uvicorn")

from helpers import RunningWorker, async_wait_for, wait_for  # noqa: E402
from test_cli import assert_one_line_error, fq  # noqa: E402

import fastq  # noqa: E402
from fastq import keys  # noqa: E402
from fastq.dashboard import DashboardConfig, create_app  # noqa: E402

TOKEN = "t0ken-for-tests-0123456789"
ROOT = Path(__file__).resolve().parent.parent


class Resp:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Resp {self.status} {self.headers.get('location', '')} {self.text[:300]!r}>"


class Client:
    """An HTTP client that keeps cookies and sends what a browser page of the dashboard sends."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port, self.host = port, host
        self.cookies: dict[str, str] = {}

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None,
                origin: str | None | bool = True, body: bytes | None = None) -> Resp:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        hdrs = {"Host": f"{self.host}:{self.port}"}
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            body = urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if method == "POST" and origin is True:
            hdrs["Origin"] = self.origin
        elif isinstance(origin, str):
            hdrs["Origin"] = origin
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        raw = conn.getresponse()
        data = raw.read()
        for header in raw.headers.get_all("set-cookie") or []:
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or morsel.value in ("", '""'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        conn.close()
        return Resp(raw.status, raw.headers, data)

    def get(self, path: str, **kw) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict, **kw) -> Resp:
        return self.request("POST", path, form=form, **kw)

    def login(self, token: str = TOKEN) -> Resp:
        page = self.get("/login")
        assert page.status == 200, page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        return self.post("/login", {"csrf": csrf, "token": token, "next": "/"})

    def csrf(self, path: str = "/") -> str:
        page = self.get(path)
        assert page.status == 200, page
        return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


class LiveDashboard:
    """The ASGI app served by uvicorn in a thread, on a socket bound to a free port."""

    def __init__(self, **config) -> None:
        config.setdefault("login_delay", 0.0)
        self.app = create_app(DashboardConfig(**config))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        # proxy_headers=False as `fastq dashboard` serves it: the app itself decides whom to trust
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on",
                                                    server_header=False, proxy_headers=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveDashboard":
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, what="dashboard start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def client(self, host: str = "127.0.0.1") -> Client:
        return Client(self.port, host)


@pytest.fixture
def dash(redis_url):
    with LiveDashboard(redis=redis_url, token=TOKEN) as d:
        yield d


@pytest.fixture
def user(dash):
    c = dash.client()
    assert c.login().status == 303
    return c


@pytest.fixture
def seeded(redis_url):
    """Queues 'default' (3 pending, 1 scheduled, 1 archived with an error) and 'low' (1 pending)."""
    c = fastq.Client(redis_url)
    pending = [c.enqueue(fastq.Task("email:send", b'{"to": "ada@example.com"}')).id for _ in range(3)]
    scheduled = c.enqueue(fastq.Task("report", b"r"), process_in=3600).id
    archived = c.enqueue(fastq.Task("bad", b"<script>alert(1)</script>"), task_id="arch-1").id
    fastq.Inspector(redis_url).archive_task("default", archived)
    low = c.enqueue(fastq.Task("low:job"), queue="low").id
    c.close()
    return {"pending": pending, "scheduled": scheduled, "archived": archived, "low": low}


def state_of(r, queue: str, tid: str) -> str | None:
    value = r.hget(keys.task_key(queue, tid), "state")
    return value.decode() if value else None


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs a token"),
    ({"token": "short"}, "at least 16 characters"),
    ({"token": TOKEN, "allowed_hosts": ()}, "at least one host"),
    ({"token": TOKEN, "refresh_seconds": 0}, "refresh_seconds"),
])
def test_config_refuses_unsafe_or_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DashboardConfig(**kwargs)


# ------------------------------------------------------------------ authentication


def test_pages_need_login_and_the_api_answers_401(dash, seeded):
    c = dash.client()
    for path in ("/", "/queue?q=default", "/tasks?q=default", f"/task?q=default&id={seeded['low']}", "/servers",
                 "/scheduler"):
        res = c.get(path)
        assert res.status == 303 and res.headers["location"].startswith("/login?next="), (path, res)
    res = c.get("/api/queues")
    assert res.status == 401 and "log in first" in res.json()["error"]
    assert "default" not in c.get("/login").text  # the login page shows no data


def test_login_with_wrong_then_right_token(dash, seeded):
    c = dash.client()
    res = c.login("wrong-token-wrong-token")
    assert res.status == 303 and "failed=1" in res.headers["location"]
    assert c.get("/").status == 303
    assert "That token is not right" in c.get(res.headers["location"]).text
    res = c.login()
    assert res.status == 303 and res.headers["location"] == "/"
    page = c.get("/")
    assert page.status == 200 and "default" in page.text and "low" in page.text


def test_login_form_itself_is_protected(dash):
    c = dash.client()
    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert c.post("/login", {"csrf": "x" * 20, "token": TOKEN}).status == 403          # wrong login CSRF
    assert c.post("/login", {"csrf": csrf, "token": TOKEN}, origin="http://evil.example").status == 403
    assert c.post("/login", {"csrf": csrf, "token": TOKEN}, origin=None).status == 403  # no Origin at all
    assert "fastq_session" not in c.cookies
    assert c.post("/login", {"csrf": csrf, "token": TOKEN, "next": "//evil.example/x"}).headers["location"] == "/"


def test_session_cookie_is_httponly_and_strict(dash):
    c = dash.client()
    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    res = c.post("/login", {"csrf": csrf, "token": TOKEN})
    cookie = [h for h in res.headers.get_all("set-cookie") if h.startswith("fastq_session=")][0].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


def _cookie_flags(res: Resp, name: str) -> SimpleCookie:
    (header,) = [h for h in res.headers.get_all("set-cookie") or [] if h.startswith(name + "=")]
    cookie = SimpleCookie()
    cookie.load(header)
    return cookie[name]


def login_through(c: Client, proto: str | None, origin_scheme: str = "http") -> tuple:
    """Log in as a browser does, through a proxy that sends ``X-Forwarded-Proto: proto`` (None: no proxy).
    Returns the login-form cookie and the session cookie (``Morsel``s)."""
    headers = {"X-Forwarded-Proto": proto} if proto else {}
    page = c.get("/login", headers=headers)
    assert page.status == 200, page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    res = c.post("/login", {"csrf": csrf, "token": TOKEN}, headers=headers,
                 origin=f"{origin_scheme}://{c.host}:{c.port}")
    assert res.status == 303 and res.headers["location"] == "/", res
    return _cookie_flags(page, "fastq_login"), _cookie_flags(res, "fastq_session")


@pytest.mark.parametrize("allow, proto, secure", [
    (("127.0.0.1",), "https", True),     # the TLS proxy on this host is trusted by default
    (("10.0.0.0/8", "::1"), "https", False),  # the header from an untrusted address: ignored
    (("127.0.0.1",), None, False),       # plain http, no proxy
    (("127.0.0.1",), "http", False),     # a trusted proxy that took plain http
    (("*",), "https", True),
])
def test_session_cookie_secure_over_https_through_a_trusted_proxy(redis_url, allow, proto, secure):
    with LiveDashboard(redis=redis_url, token=TOKEN, forwarded_allow_ips=allow) as d:
        c = d.client()
        # the browser's Origin is https:// behind a TLS proxy: the same-origin check takes the trusted scheme
        login, session = login_through(c, proto, origin_scheme="https" if secure else "http")
        assert bool(session["secure"]) is secure and bool(login["secure"]) is secure
        assert session["httponly"] and session["samesite"].lower() == "strict"
        assert c.get("/", headers={"X-Forwarded-Proto": proto} if proto else {}).status == 200


def test_untrusted_forwarded_proto_does_not_change_the_origin_check(redis_url):
    with LiveDashboard(redis=redis_url, token=TOKEN, forwarded_allow_ips=("10.0.0.1",)) as d:
        c = d.client()
        page = c.get("/login", headers={"X-Forwarded-Proto": "https"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        res = c.post("/login", {"csrf": csrf, "token": TOKEN}, headers={"X-Forwarded-Proto": "https"},
                     origin=f"https://127.0.0.1:{d.port}")
        assert res.status == 403 and "fastq_session" not in c.cookies


@pytest.mark.parametrize("allow", [("not-an-address",), ("10.0.0.0/33",), ()])
def test_config_refuses_bad_forwarded_allow_ips(allow):
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        DashboardConfig(token=TOKEN, forwarded_allow_ips=allow)


def test_logout_ends_the_session(user):
    csrf = user.csrf()
    old = dict(user.cookies)
    assert user.post("/logout", {"csrf": csrf}).status == 303
    assert user.get("/").status == 303
    user.cookies = old  # a stolen copy of the cookie is dead too
    assert user.get("/").status == 303


def test_bearer_token_reads_but_cannot_change(dash, seeded, r):
    c = dash.client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert c.get("/api/queues", headers=auth).status == 200
    assert c.get("/", headers=auth).status == 200
    assert c.get("/api/queues", headers={"Authorization": "Bearer nope-nope-nope-nope"}).status == 401
    res = c.post("/action/queue", {"q": "default", "action": "pause", "csrf": "x"}, headers=auth)
    assert res.status == 401
    assert not r.exists(keys.paused_key("default"))


def test_security_headers_on_every_response(dash, user, seeded):
    for res in (dash.client().get("/login"), user.get("/"), user.get("/api/queues"), user.get("/nope"),
                user.get("/static/dashboard.js"), user.get("/tasks?q=default&page=0")):
        csp = res.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["x-frame-options"] == "DENY"
        assert res.headers["referrer-policy"] == "same-origin"
        assert "server" not in res.headers
    assert user.get("/").headers["cache-control"] == "no-store"
    page = user.get("/").text
    assert "<script>" not in page and " onclick=" not in page and " style=" not in page  # CSP-clean markup


def test_unknown_host_header_is_refused(dash, seeded):
    res = dash.client(host="evil.example").get("/login")
    assert res.status == 400 and "Host header not allowed" in res.text
    assert dash.client(host="localhost").get("/login").status == 200


# ------------------------------------------------------------------ actions and their checks


def test_pause_and_resume_a_queue(user, seeded, r):
    csrf = user.csrf("/queue?q=default")
    res = user.post("/action/queue", {"q": "default", "action": "pause", "csrf": csrf, "next": "/queue?q=default"})
    assert res.status == 303 and res.headers["location"] == "/queue?q=default"
    assert r.exists(keys.paused_key("default"))
    page = user.get("/queue?q=default").text
    assert "queue default paused" in page and 'id="queue-state">paused' in page and ">Resume<" in page
    assert user.post("/action/queue", {"q": "default", "action": "pause", "csrf": csrf}).status == 409
    assert user.post("/action/queue", {"q": "default", "action": "unpause", "csrf": csrf}).status == 303
    assert not r.exists(keys.paused_key("default"))


@pytest.mark.parametrize("case", ["no-origin", "foreign-origin", "null-origin", "cross-site-fetch", "no-csrf",
                                  "wrong-csrf", "other-session-csrf"])
def test_mutations_need_same_origin_and_the_csrf_token(dash, user, seeded, r, case):
    csrf = user.csrf()
    form = {"q": "default", "action": "pause", "csrf": csrf}
    kw: dict = {}
    if case == "no-origin":
        kw["origin"] = None
    elif case == "foreign-origin":
        kw["origin"] = "http://evil.example"
    elif case == "null-origin":
        kw["origin"] = "null"
    elif case == "cross-site-fetch":
        kw["headers"] = {"Sec-Fetch-Site": "cross-site"}
    elif case == "no-csrf":
        del form["csrf"]
    elif case == "wrong-csrf":
        form["csrf"] = "A" * len(csrf)
    else:
        other = dash.client()
        other.login()
        form["csrf"] = other.csrf()
    res = user.post("/action/queue", form, **kw)
    assert res.status == 403, res
    assert ("CSRF" in res.text) if "csrf" in case else ("cross" in res.text.lower())
    assert not r.exists(keys.paused_key("default"))
    # the same request done right goes through, so the refusal above was the check, not something else
    assert user.post("/action/queue", {"q": "default", "action": "pause", "csrf": csrf}).status == 303


def test_same_origin_fetch_metadata_is_accepted(user, seeded, r):
    csrf = user.csrf()
    res = user.post("/action/queue", {"q": "low", "action": "pause", "csrf": csrf}, origin=None,
                    headers={"Sec-Fetch-Site": "same-origin"})
    assert res.status == 303 and r.exists(keys.paused_key("low"))


def test_actions_are_post_only(user, seeded, r):
    assert user.get("/action/queue?q=default&action=pause").status == 405
    assert user.get(f"/action/task?q=default&id={seeded['low']}&action=delete").status == 405
    assert not r.exists(keys.paused_key("default"))


def test_task_actions_run_archive_delete(user, seeded, r):
    csrf = user.csrf()
    sid = seeded["scheduled"]
    assert user.post("/action/task", {"q": "default", "id": sid, "action": "run", "csrf": csrf}).status == 303
    assert state_of(r, "default", sid) == "pending"
    assert user.post("/action/task", {"q": "default", "id": sid, "action": "archive", "csrf": csrf}).status == 303
    assert state_of(r, "default", sid) == "archived"
    res = user.post("/action/task", {"q": "default", "id": sid, "action": "delete", "csrf": csrf})
    assert res.status == 303 and res.headers["location"] == "/queue?q=default"
    assert state_of(r, "default", sid) is None
    assert f"task {sid} deleted" in user.get("/queue?q=default").text
    # an archived task cannot be archived again; a pending one cannot be cancelled
    arch = seeded["archived"]
    res = user.post("/action/task", {"q": "default", "id": arch, "action": "archive", "csrf": csrf})
    assert res.status == 409 and state_of(r, "default", arch) == "archived"
    pend = seeded["pending"][0]
    res = user.post("/action/task", {"q": "default", "id": pend, "action": "cancel", "csrf": csrf})
    assert res.status == 409 and "not active" in res.text and state_of(r, "default", pend) == "pending"


def test_cancel_a_running_task(redis_url, r):
    async def main():
        started, seen = asyncio.Event(), {}

        async def slow(task):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen["cancelled"] = fastq.get_task_id()
                raise

        tid = fastq.Client(redis_url).enqueue(fastq.Task("slow"), max_retry=0).id
        async with RunningWorker(slow, redis_url):
            await asyncio.wait_for(started.wait(), 10)
            with LiveDashboard(redis=redis_url, token=TOKEN) as d:
                c = d.client()
                await asyncio.to_thread(c.login)
                page = await asyncio.to_thread(c.get, f"/task?q=default&id={tid}")
                assert 'id="task-state">active' in page.text and ">Cancel<" in page.text and ">Delete<" not in page.text
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
                res = await asyncio.to_thread(c.post, "/action/task",
                                              {"q": "default", "id": tid, "action": "cancel", "csrf": csrf})
                assert res.status == 303
                await async_wait_for(lambda: seen.get("cancelled") == tid, what="handler cancelled")
                await async_wait_for(lambda: state_of(r, "default", tid) == "archived", what="task archived")
                res = await asyncio.to_thread(c.post, "/action/task",
                                              {"q": "default", "id": tid, "action": "delete", "csrf": csrf})
                assert res.status == 303 and state_of(r, "default", tid) is None

    asyncio.run(main())


def test_read_only_mode_refuses_every_action_and_hides_buttons(redis_url, seeded, r):
    with LiveDashboard(redis=redis_url, token=TOKEN, read_only=True) as d:
        c = d.client()
        c.login()
        page = c.get("/queue?q=default").text
        assert "read-only" in page and ">Pause<" not in page
        task_page = c.get(f"/task?q=default&id={seeded['scheduled']}").text
        assert ">Delete<" not in task_page and ">Run now<" not in task_page
        csrf = c.csrf()
        res = c.post("/action/queue", {"q": "default", "action": "pause", "csrf": csrf})
        assert res.status == 403 and "read-only" in res.text
        res = c.post("/action/task", {"q": "default", "id": seeded["scheduled"], "action": "delete", "csrf": csrf})
        assert res.status == 403
        assert not r.exists(keys.paused_key("default")) and state_of(r, "default", seeded["scheduled"]) == "scheduled"
        assert c.post("/logout", {"csrf": csrf}).status == 303  # logging out still works


def test_no_auth_mode_still_checks_origin_and_csrf(redis_url, seeded, r):
    with LiveDashboard(redis=redis_url, auth=False) as d:
        c = d.client()
        assert c.get("/").status == 200 and "fastq_session" in c.cookies
        assert c.post("/action/queue", {"q": "default", "action": "pause", "csrf": "x" * 43}).status == 403
        fresh = d.client()  # no session at all
        assert fresh.post("/action/queue", {"q": "default", "action": "pause", "csrf": "x"}).status == 401
        assert not r.exists(keys.paused_key("default"))
        assert c.post("/action/queue", {"q": "default", "action": "pause", "csrf": c.csrf()}).status == 303
        assert r.exists(keys.paused_key("default"))


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("path, status, fragment", [
    ("/queue", 400, "missing queue"),
    ("/queue?q=nope", 404, "queue not found"),
    ("/queue?q=" + "x" * 2000, 400, "longer than"),
    ("/tasks?q=nope", 404, "queue not found"),
    ("/tasks?q=default&state=bogus", 400, "unknown state"),
    ("/tasks?q=default&page=0", 400, "page must be from 1"),
    ("/tasks?q=default&page=-1", 400, "page must be a whole number"),
    ("/tasks?q=default&page=abc", 400, "page must be a whole number"),
    ("/tasks?q=default&page=1.5", 400, "page must be a whole number"),
    ("/tasks?q=default&page=99999999999", 400, "page must be from 1"),
    ("/tasks?q=default&page=2", 404, "page 2 does not exist"),
    ("/tasks?q=default&size=0", 400, "size must be from 1"),
    ("/tasks?q=default&size=5000", 400, "size must be from 1"),
    ("/tasks?q=default&state=aggregating", 400, "missing group"),
    ("/tasks?q=default&state=pending&group=g", 400, "only applies"),
    ("/task?q=default", 400, "missing task ID"),
    ("/task?q=default&id=nope", 404, "task not found"),
    ("/task?q=nope&id=x", 404, "queue not found"),
    ("/search?id=", 400, "missing task ID"),
    ("/search?id=no-such-task", 404, "no task with ID 'no-such-task'"),
    ("/scheduler/history", 400, "missing entry ID"),
    ("/scheduler/history?entry=e&page=x", 400, "page must be"),
    ("/static/../app.py", 404, ""),
    ("/nope", 404, ""),
])
def test_bad_requests_get_a_clear_4xx(user, seeded, path, status, fragment):
    res = user.get(path)
    assert res.status == status, res
    assert fragment.lower() in html.unescape(res.text).lower()
    assert "Traceback" not in res.text


def test_bad_requests_in_json_for_the_api(user):
    res = user.get("/api/nope")
    assert res.status == 404 and "error" in res.json()


@pytest.mark.parametrize("form, status, fragment", [
    ({"q": "nope", "action": "pause"}, 404, "queue not found"),
    ({"q": "", "action": "pause"}, 400, "missing queue"),
    ({"q": "default", "action": "explode"}, 400, "unknown queue action"),
    ({"q": "default"}, 400, "unknown queue action"),
])
def test_bad_queue_actions_change_nothing(user, seeded, r, form, status, fragment):
    before = sorted(r.keys("*"))
    res = user.post("/action/queue", {**form, "csrf": user.csrf()})
    assert res.status == status and fragment in res.text, res
    assert sorted(r.keys("*")) == before and not r.exists(keys.paused_key("default"))


@pytest.mark.parametrize("form, status, fragment", [
    ({"q": "default", "id": "nope", "action": "delete"}, 404, "task not found"),
    ({"q": "nope", "id": "x", "action": "run"}, 404, "queue not found"),
    ({"q": "default", "id": "", "action": "run"}, 400, "missing task ID"),
    ({"q": "default", "id": "arch-1", "action": "launch"}, 400, "unknown task action"),
    ({"q": "default", "id": "nope", "action": "cancel"}, 404, "task not found"),
])
def test_bad_task_actions_change_nothing(user, seeded, r, form, status, fragment):
    before = {k: r.type(k) for k in r.keys("*")}
    res = user.post("/action/task", {**form, "csrf": user.csrf()})
    assert res.status == status and fragment in res.text, res
    assert {k: r.type(k) for k in r.keys("*")} == before
    assert state_of(r, "default", "arch-1") == "archived"


def test_bad_form_bodies(user, seeded, r):
    csrf = user.csrf()
    body = json.dumps({"q": "default", "action": "pause", "csrf": csrf}).encode()
    res = user.request("POST", "/action/queue", body=body,
                       headers={"Content-Type": "application/json"})
    assert res.status == 415
    big = urlencode({"q": "default", "action": "pause", "csrf": csrf, "pad": "x" * 20000}).encode()
    res = user.request("POST", "/action/queue", body=big, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status == 413
    res = user.request("POST", "/action/queue", body=b"q=\xff\xfe&csrf=" + csrf.encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status in (400, 403)
    assert not r.exists(keys.paused_key("default"))


def test_redis_down_is_a_503(tmp_path):
    from helpers import free_port

    with LiveDashboard(redis=f"redis://127.0.0.1:{free_port()}/0", token=TOKEN) as d:
        c = d.client()
        c.login()
        res = c.get("/")
        assert res.status == 503 and "Redis is not reachable" in res.text


# ------------------------------------------------------------------ pages


def test_overview_lists_queues_with_sizes(user, seeded, redis_url):
    fastq.Inspector(redis_url).pause_queue("low")
    page = user.get("/").text
    row = re.search(r'<tr data-queue="default">(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'data-field="size">5<', row) and re.search(r'data-field="pending">3<', row)
    assert re.search(r'data-field="archived">1<', row) and re.search(r'data-field="scheduled">1<', row)
    low = re.search(r'<tr data-queue="low">(.*?)</tr>', page, re.S).group(1)
    assert "paused" in low and ">Resume<" in low
    assert 'id="throughput"' in page and "<svg" in page


def test_api_queues_for_the_live_chart(user, seeded, redis_url):
    data = user.get("/api/queues").json()
    by_name = {q["queue"]: q for q in data["queues"]}
    assert by_name["default"]["pending"] == 3 and by_name["low"]["size"] == 1
    assert abs(data["time"] - time.time()) < 5
    assert {"processed_total", "failed_total", "paused", "latency"} <= set(by_name["default"])


def test_history_chart_counts_processed_and_failed(redis_url):
    async def main():
        def handler(task):
            if task.type == "fail":
                raise fastq.SkipRetry("no")

        c = fastq.Client(redis_url)
        c.enqueue_many([fastq.Task("ok")] * 4)
        c.enqueue(fastq.Task("fail"))
        async with RunningWorker(handler, redis_url):
            await async_wait_for(lambda: fastq.Inspector(redis_url).get_queue_info("default").processed == 5,
                                 what="5 processed")
        with LiveDashboard(redis=redis_url, token=TOKEN) as d:
            c2 = d.client()
            await asyncio.to_thread(c2.login)
            page = (await asyncio.to_thread(c2.get, "/queue?q=default")).text
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert f"{today}: 5 processed" in page and f"{today}: 1 failed" in page

    asyncio.run(main())


def test_task_list_pages_and_sizes(user, redis_url):
    c = fastq.Client(redis_url)
    ids = [i.id for i in c.enqueue_many([fastq.Task("t", str(n).encode()) for n in range(65)])]
    expected = [t.id for t in fastq.Inspector(redis_url).list_pending_tasks("default", page=3, page_size=30)]
    page3 = user.get("/tasks?q=default&state=pending&page=3&size=30")
    assert page3.status == 200 and "page 3 of 3" in page3.text
    shown = re.findall(r'<tr data-task="([^"]+)">', page3.text)
    assert shown == expected and len(shown) == 5 and set(shown) <= set(ids)
    page1 = user.get("/tasks?q=default&state=pending&size=30").text
    assert len(re.findall(r'<tr data-task=', page1)) == 30 and 'rel="next"' in page1 and 'rel="prev"' not in page1
    assert user.get("/tasks?q=default&state=pending&page=4&size=30").status == 404


def test_task_detail_hides_payload_by_default(user, seeded):
    page = user.get("/task?q=default&id=arch-1").text
    assert 'id="payload-hidden"' in page and "alert(1)" not in page
    assert "25 bytes" in page and 'id="task-state">archived' in page


def test_task_detail_shows_escaped_payload_when_enabled(redis_url, seeded):
    with LiveDashboard(redis=redis_url, token=TOKEN, show_payloads=True) as d:
        c = d.client()
        c.login()
        page = c.get("/task?q=default&id=arch-1").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        page = c.get(f"/task?q=default&id={seeded['pending'][0]}").text
        assert '"to": "ada@example.com"' in page.replace("&#34;", '"')


def test_task_detail_shows_error_retries_and_result(redis_url):
    async def main():
        async def handler(task):
            if task.type == "flaky":
                raise RuntimeError("database <down>")
            return b"the result"

        c = fastq.Client(redis_url)
        flaky = c.enqueue(fastq.Task("flaky"), max_retry=3).id
        done = c.enqueue(fastq.Task("good"), retention=600).id
        async with RunningWorker(handler, redis_url):
            await async_wait_for(lambda: fastq.Inspector(redis_url).get_queue_info("default").processed == 2,
                                 what="both ran")
        with LiveDashboard(redis=redis_url, token=TOKEN, show_payloads=True) as d:
            c2 = d.client()
            await asyncio.to_thread(c2.login)
            page = (await asyncio.to_thread(c2.get, f"/task?q=default&id={flaky}")).text
            assert "RuntimeError: database &lt;down&gt;" in page and "1 of 3" in page and ">retry<" in page
            page = (await asyncio.to_thread(c2.get, f"/task?q=default&id={done}")).text
            assert 'id="result">the result<' in page and ">completed<" in page

    asyncio.run(main())


def test_search_by_id(user, seeded):
    res = user.get(f"/search?id={seeded['low']}")
    assert res.status == 303 and res.headers["location"] == f"/task?q=low&id={seeded['low']}"
    res = user.get(f"/search?id=%20{seeded['low']}%20")  # pasted with spaces
    assert res.status == 303
    res = user.get(f"/search?id={seeded['low']}&q=default")
    assert res.status == 404 and "in queue 'default'" in html.unescape(res.text)


def test_servers_page_shows_live_workers_and_their_tasks(redis_url):
    async def main():
        started = asyncio.Event()

        async def slow(task):
            started.set()
            await asyncio.sleep(30)

        tid = fastq.Client(redis_url).enqueue(fastq.Task("slow:job")).id
        async with RunningWorker(slow, redis_url, queues={"default": 3, "low": 1}) as w:
            await asyncio.wait_for(started.wait(), 10)
            await async_wait_for(lambda: fastq.Inspector(redis_url).servers()
                                 and fastq.Inspector(redis_url).servers()[0].active_workers, what="heartbeat")
            with LiveDashboard(redis=redis_url, token=TOKEN) as d:
                c = d.client()
                await asyncio.to_thread(c.login)
                page = (await asyncio.to_thread(c.get, "/servers")).text
            await w.stop(immediate=True)
        assert f":{os.getpid()} " in page and "1 live" in page
        assert tid in page and "slow:job" in page and "default:3" in page and "low:1" in page

    asyncio.run(main())


def test_scheduler_page_lists_entries_and_history(user, redis_url):
    sched = fastq.Scheduler(redis_url, heartbeat_interval=0.5)
    entry = sched.register("@every 1s", fastq.Task("tick", b"secret-payload"), queue="low")
    sched.start()
    try:
        wait_for(lambda: fastq.Inspector(redis_url).list_scheduler_enqueue_events(entry), timeout=10,
                 what="one enqueue")
        page = user.get("/scheduler").text
        assert "@every 1s" in page and "tick" in page and 'Queue(&#34;low&#34;)' in page
        assert "secret-payload" not in page and "14 B" in page
        history = user.get(f"/scheduler/history?entry={entry}")
        assert history.status == 200 and len(re.findall(r'<td class="mono">[0-9a-f-]{36}</td>', history.text)) >= 1
    finally:
        sched.stop()


def test_static_files_and_javascript_are_served(user):
    js = user.get("/static/dashboard.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript") and "/api/queues" in js.text
    css = user.get("/static/dashboard.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")


# ------------------------------------------------------------------ the fastq dashboard command


def test_dashboard_command_needs_a_token(redis_url, monkeypatch):
    monkeypatch.delenv("FASTQ_DASHBOARD_TOKEN", raising=False)
    res = fq(redis_url, "dashboard", "--port", "0")
    assert_one_line_error(res, "no dashboard token", "FASTQ_DASHBOARD_TOKEN", code=2)


def test_dashboard_command_refuses_a_token_on_the_command_line(redis_url):
    res = fq(redis_url, "dashboard", "--token", TOKEN)
    assert_one_line_error(res, "do not pass the token on the command line", code=2)
    assert TOKEN not in res.err


@pytest.mark.parametrize("setup, args, fragment, code", [
    ("missing", ["--token-file", "{dir}/none.txt"], "cannot read the token file", 2),
    ("empty", ["--token-file", "{dir}/tok.txt"], "is empty", 2),
    ("short", ["--token-file", "{dir}/tok.txt"], "at least 16 characters", 2),
    ("good", ["--no-auth", "--token-file", "{dir}/tok.txt"], "choose one", 2),
    ("none", ["--no-auth", "--host", "0.0.0.0"], "only allowed on a loopback address", 2),
    ("none", ["--port", "70000"], "70000", 2),
    ("good", ["--token-file", "{dir}/tok.txt", "--refresh", "0"], "--refresh", 2),
])
def test_dashboard_command_bad_input(redis_url, tmp_path, monkeypatch, setup, args, fragment, code):
    monkeypatch.delenv("FASTQ_DASHBOARD_TOKEN", raising=False)
    content = {"empty": "  \n", "short": "abc\n", "good": TOKEN + "\n"}.get(setup)
    if content is not None:
        (tmp_path / "tok.txt").write_text(content)
    res = fq(redis_url, "dashboard", *[a.format(dir=tmp_path) for a in args])
    assert_one_line_error(res, fragment, code=code)


def test_dashboard_command_reports_a_busy_port(redis_url, monkeypatch):
    monkeypatch.setenv("FASTQ_DASHBOARD_TOKEN", TOKEN)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        res = fq(redis_url, "dashboard", "--port", str(busy.getsockname()[1]))
    assert_one_line_error(res, "cannot listen on 127.0.0.1", code=1)


def start_dashboard_process(redis_url: str, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """Run the installed ``fastq dashboard`` console script on a free port; return it and the port."""
    exe = Path(sys.executable).with_name("fastq")
    full_env = {**os.environ, "FASTQ_DASHBOARD_TOKEN": TOKEN, **(env or {})}
    proc = subprocess.Popen([str(exe), "--redis-url", redis_url, "dashboard", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    line = proc.stderr.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if m is None:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"fastq dashboard did not start: {line}{err}")
    port = int(m.group(1))
    wait_for(lambda: _accepts(port), timeout=10, what="dashboard listening")
    return proc, port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_dashboard_command_serves_until_sigterm(redis_url, seeded):
    proc, port = start_dashboard_process(redis_url, "--read-only")
    try:
        c = Client(port)
        assert c.login().status == 303
        page = c.get("/")
        assert page.status == 200 and "read-only" in page.text and "low" in page.text
        assert TOKEN not in " ".join(__import__("psutil").Process(proc.pid).cmdline())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_dashboard_command_trusts_forwarded_proto_only_from_allowed_addresses(redis_url):
    """Behind a TLS proxy on this host (the default --forwarded-allow-ips 127.0.0.1) the session cookie is
    Secure; an address not in the list (option or FASTQ_DASHBOARD_FORWARDED_ALLOW_IPS) cannot make it so."""
    for args, env, secure in [((), None, True),
                              (("--forwarded-allow-ips", "10.0.0.1,192.168.0.0/16"), None, False),
                              ((), {"FASTQ_DASHBOARD_FORWARDED_ALLOW_IPS": "10.0.0.1"}, False)]:
        proc, port = start_dashboard_process(redis_url, *args, env=env)
        try:
            login, session = login_through(Client(port), "https", origin_scheme="https" if secure else "http")
            assert bool(session["secure"]) is secure and bool(login["secure"]) is secure, (args, env)
            _, plain = login_through(Client(port), None)
            assert not plain["secure"]
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err


def test_dashboard_command_refuses_bad_forwarded_allow_ips(redis_url, monkeypatch):
    monkeypatch.setenv("FASTQ_DASHBOARD_TOKEN", TOKEN)
    res = fq(redis_url, "dashboard", "--forwarded-allow-ips", "10.0.0.1,proxy.example")
    assert_one_line_error(res, "forwarded_allow_ips", "proxy.example", code=2)


# ------------------------------------------------------------------ packaging


@pytest.mark.slow
def test_wheel_contains_templates_and_static_files(tmp_path):
    env = dict(os.environ, FASTQ_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist())
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "fastq" / "dashboard").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk and on_disk <= names, on_disk - names
    assert {"fastq/contrib/prometheus.py", "fastq/contrib/otel.py"} <= names


# ------------------------------------------------------------------ asynqmon compatibility


def _field_numbers(data: bytes) -> list[int]:
    """Field numbers present in a protobuf message, read with a bare wire-format walker (no fastq code)."""
    out, i = [], 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            length = varint()  # (not "i += varint()": that reads i before varint() moves it)
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise AssertionError(f"wire type {wire}")
        out.append(number)
    return out


def test_what_a_fastq_worker_writes_reads_like_go_asynq_for_asynqmon(redis_url, r):
    """asynqmon reads everything through Go's Inspector. Do its reads as raw Redis commands (Go's
    listServerKeys/listWorkers, currentStats) on a live fastq worker and check the protobufs have
    the fields Go's own server writes (tests/golden/server_info.json), by field number."""
    import socket as socket_mod

    from helpers import golden

    from fastq._proto import ServerInfo, WorkerInfo, decode

    sample = golden("server_info.json")["sample_active"]
    started = asyncio.Event()

    async def handler(task):
        if task.type == "slow":
            started.set()
            await asyncio.sleep(30)
        elif task.type == "bad":
            raise RuntimeError("nope")

    async def main():
        c = fastq.Client(redis_url)
        c.enqueue_many([fastq.Task("ok")] * 3)
        c.enqueue(fastq.Task("bad"), max_retry=0)
        slow = c.enqueue(fastq.Task("slow", b"zz")).id
        async with RunningWorker(handler, redis_url, concurrency=3, queues={"default": 1}) as w:
            await asyncio.wait_for(started.wait(), 10)
            await async_wait_for(lambda: r.hlen(next(iter(r.zrange("asynq:workers", 0, -1)), b"x")) == 1,
                                 what="heartbeat with the running task")
            now = time.time()
            # Go's listServerKeys / ListServers
            (server_key,) = r.zrangebyscore("asynq:servers", now, "+inf")
            raw_server = r.get(server_key)
            assert 0 < r.pttl(server_key) <= 10_000 and r.zscore("asynq:servers", server_key) >= int(now)
            # Go's listWorkers
            (workers_key,) = r.zrangebyscore("asynq:workers", now, "+inf")
            raw_workers = r.hvals(workers_key)
            assert 0 < r.pttl(workers_key) <= 10_000
            await w.stop(immediate=True)
        return slow, server_key.decode(), raw_server, workers_key.decode(), raw_workers

    slow, server_key, raw_server, workers_key, raw_workers = asyncio.run(main())
    info = decode(ServerInfo, raw_server)
    host, pid = socket_mod.gethostname(), os.getpid()
    assert server_key == f"asynq:servers:{{{host}:{pid}:{info.server_id}}}"
    assert workers_key == f"asynq:workers:{{{host}:{pid}:{info.server_id}}}"
    assert (info.host, info.pid, info.concurrency, info.queues, info.status) == (host, pid, 3, {"default": 1}, "active")
    assert info.active_worker_count == 1 and info.start_time is not None
    # the same fields, in the same order, as the ServerInfo Go's server wrote for one running task
    assert _field_numbers(raw_server) == _field_numbers(bytes.fromhex(sample["server_info_hex"]))
    (raw_worker,) = raw_workers
    winfo = decode(WorkerInfo, raw_worker)
    assert (winfo.task_id, winfo.task_type, winfo.task_payload, winfo.queue) == (slow, "slow", b"zz", "default")
    assert winfo.server_id == info.server_id and winfo.host == host and winfo.pid == pid
    assert _field_numbers(raw_worker) == _field_numbers(bytes.fromhex(sample["worker_info_hex"]))
    deadline = winfo.deadline.seconds + winfo.deadline.nanos / 1e9
    start = winfo.start_time.seconds + winfo.start_time.nanos / 1e9
    assert deadline == pytest.approx(start + 1800, abs=2)  # default timeout, as Go computes the deadline
    # Go's currentStats: plain counters and containers of the queue
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert r.get(f"asynq:{{default}}:processed:{today}") == b"4"  # the slow task was requeued, not processed
    assert r.get(f"asynq:{{default}}:failed:{today}") == b"1"
    assert r.get("asynq:{default}:processed") == b"4" and r.get("asynq:{default}:failed") == b"1"
    assert 89 * 86400 < r.ttl(f"asynq:{{default}}:processed:{today}") <= 90 * 86400
    assert r.llen("asynq:{default}:pending") == 1 and r.zcard("asynq:{default}:archived") == 1
    (requeued,) = r.lrange("asynq:{default}:pending", -1, -1)
    fields = r.hgetall(b"asynq:{default}:t:" + requeued)
    assert requeued.decode() == slow and fields[b"state"] == b"pending"
    assert b"pending_since" not in fields  # requeued at shutdown: Go's requeue sets none either (latency 0)
    assert r.smembers("asynq:queues") == {b"default"}


def test_a_chord_is_shown_with_its_members_done_and_state(user, redis_url, r):
    from helpers import chord_app

    app, part, join = chord_app(redis_url)
    try:
        ref = fastq.chord(fastq.group(part.s(i) for i in range(3)), join.s()).enqueue()
        page = user.get(f"/chord?q=default&id={ref.id}")
        assert page.status == 200, page
        assert re.search(r'id="chord-members">0 of 3<', page.text) and 'id="chord-state">waiting<' in page.text
        found = user.get(f"/search?id={ref.id}")  # no callback task yet: search finds the chord
        assert found.status == 303 and found.headers["location"].startswith("/chord?")
        from fastq.testing import WorkerHarness

        WorkerHarness(app, redis_url).drain(timeout=20)
        page = user.get(f"/chord?q=default&id={ref.id}")
        assert re.search(r'id="chord-members">3 of 3<', page.text) and 'id="chord-state">done<' in page.text
        task = user.get(f"/task?q=default&id={ref.id}")
        assert re.search(r'id="task-chord"><a href="/chord\?[^"]+">3 of 3 members done, done<', task.text)
        missing = user.get("/chord?q=default&id=nope")
        assert missing.status == 404
        assert user.get("/chord?q=default").status == 400
    finally:
        app.close()
