"""Errors no retry can fix end a start at once, with one line; transient ones are retried.

Issue 13, item 5. Every case runs against a real redis-server of its own (``--requirepass`` and
ACL users, a plain-text port given as ``rediss://``, a TLS-only server whose CA is not given, a
paused server): ``fastq-supervisor``, ``fastq-scheduler`` and ``fastq`` exit non-zero within
10 s with one line on stderr saying what to fix, and no traceback; with nothing listening yet
the supervisor keeps running and serves tasks once a Redis starts on that port. SIGTERM in
each state of the start ends the process without a traceback.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import redis
from helpers import RedisServer, free_port, wait_for
from topology import Node, make_certs, tls_args

import fastq
from fastq.connection import TLSHandshakeError, fatal_reason, preflight
from fastq.errors import RedisConfigurationError

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-pw"
LIMIT = 10.0  # seconds: the bound for a fatal start to end

APP = textwrap.dedent('''
    import fastq

    mux = fastq.ServeMux()

    @mux.handle("fatal-test")
    def handle(task):
        with open(task.payload.decode(), "a") as f:
            f.write(fastq.get_task_id() + "\\n")
''')

SCHED_APP = textwrap.dedent('''
    import fastq

    scheduler = fastq.Scheduler()
    scheduler.register("@every 1s", fastq.Task("tick", b""))
''')


# ---------------------------------------------------------------- servers

@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A redis-server with a password, an ACL user 'alice' and a user that may not PING."""
    server = RedisServer(tmp_path_factory.mktemp("secured"), extra=["--requirepass", PASSWORD])
    server.start()
    admin = redis.Redis(port=server.port, password=PASSWORD)
    admin.acl_setuser("alice", enabled=True, passwords=["+alice-pw"], keys=["*"], channels=["*"], commands=["+@all"])
    admin.acl_setuser("noping", enabled=True, passwords=["+noping-pw"], keys=["*"], commands=["-@all", "+get"])
    yield server
    admin.close()
    server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    port = free_port()
    node = Node(tmp_path_factory.mktemp("tls"), port, ["--save", "", "--appendonly", "no", *tls_args(certs, port)],
                client_kwargs={"ssl": True, "ssl_ca_certs": str(certs["ca"]), "ssl_check_hostname": False})
    node.start()
    node.wait_ready()
    yield node
    node.stop()


def _unknown_host() -> str:
    """``.invalid`` never resolves (RFC 2606); skip where the resolver cannot even say so."""
    host = "no-such-redis-host.invalid"
    try:
        socket.getaddrinfo(host, 6379)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_NONAME:
            return host
        pytest.skip(f"this resolver answers {exc} (not EAI_NONAME) for an unknown name")
    pytest.skip("the resolver resolves .invalid names")


def _fatal_cases(secured, tls_server):
    p = secured.port
    return {
        "wrong password": (f"redis://:wrong-pw@127.0.0.1:{p}/0", "refused the credentials (WRONGPASS"),
        "unknown ACL user": (f"redis://bob:bob-pw@127.0.0.1:{p}/0", "refused the credentials (WRONGPASS"),
        "no password": (f"redis://127.0.0.1:{p}/0", "wants a password (NOAUTH"),
        "user may not PING": (f"redis://noping:noping-pw@127.0.0.1:{p}/0", "refused a command to this user (NOPERM"),
        "database out of range": (f"redis://:{PASSWORD}@127.0.0.1:{p}/99", "has no such database"),
        "unknown host": (f"redis://{_unknown_host()}:{p}/0", "does not resolve"),
        "TLS to a plain-text port": (f"rediss://127.0.0.1:{p}/0", "failed the TLS handshake"),
        "TLS without the CA": (f"rediss://localhost:{tls_server.port}/0", "certificate verify failed"),
    }


FATAL = ["wrong password", "unknown ACL user", "no password", "user may not PING", "database out of range",
         "unknown host", "TLS to a plain-text port", "TLS without the CA"]


def _env(path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))}


def _run(cmd: list[str], cwd, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env=_env(cwd))
    return res, time.monotonic() - started


def _assert_one_line(res: subprocess.CompletedProcess, elapsed: float, prefix: str, fragment: str) -> None:
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    assert res.returncode not in (0, None), out
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(prefix) and fragment in lines[0], lines[0]
    assert PASSWORD not in out and "wrong-pw" not in out and "bob-pw" not in out, out
    assert elapsed < LIMIT, f"took {elapsed:.1f}s: {out}"


# ---------------------------------------------------------------- fatal at start: one line, non-zero, fast

@pytest.mark.parametrize("case", FATAL)
def test_supervisor_exits_at_once_with_one_line_on_a_fatal_error(case, secured, tls_server, tmp_path):
    url, fragment = _fatal_cases(secured, tls_server)[case]
    (tmp_path / "fatal_app.py").write_text(APP)
    res, elapsed = _run([sys.executable, "-m", "fastq.cli.supervisor", "fatal_app:mux", "--redis-url", url,
                         "--processes", "1"], tmp_path)
    print(f"{case}: fastq-supervisor exited {res.returncode} after {elapsed:.2f}s: {res.stderr.strip()}")
    _assert_one_line(res, elapsed, "fastq-supervisor: error: Redis at ", fragment)


@pytest.mark.parametrize("case", ["wrong password", "unknown host", "TLS to a plain-text port"])
def test_scheduler_exits_at_once_with_one_line_on_a_fatal_error(case, secured, tls_server, tmp_path):
    url, fragment = _fatal_cases(secured, tls_server)[case]
    (tmp_path / "sched_app.py").write_text(SCHED_APP)
    res, elapsed = _run([sys.executable, "-m", "fastq.cli.scheduler", "sched_app:scheduler", "--redis-url", url],
                        tmp_path)
    print(f"{case}: fastq-scheduler exited {res.returncode} after {elapsed:.2f}s")
    _assert_one_line(res, elapsed, "fastq-scheduler: error: Redis at ", fragment)


@pytest.mark.parametrize("case", ["wrong password", "unknown host", "TLS to a plain-text port", "TLS without the CA"])
def test_cli_stats_fails_in_seconds_with_one_line(case, secured, tls_server, tmp_path):
    url, fragment = _fatal_cases(secured, tls_server)[case]
    res, elapsed = _run([sys.executable, "-m", "fastq.cli", "--redis-url", url, "stats"], tmp_path)
    print(f"{case}: fastq stats exited {res.returncode} after {elapsed:.2f}s")
    tls = case.startswith("TLS")  # the CLI prints TLSHandshakeError as it is (tests/test_tls.py)
    _assert_one_line(res, elapsed, "Error: TLS handshake with " if tls else "Error: Redis at ",
                     "It speaks plain text" if case == "TLS to a plain-text port" else fragment)
    assert res.returncode == 1


# ---------------------------------------------------------------- the classifier and the TLS timeouts

def test_fatal_reason_tells_fatal_from_transient_errors_of_a_real_redis(secured):
    p = secured.port

    def error_of(url: str) -> BaseException:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            return exc
        finally:
            client.close()
        raise AssertionError(f"{url} answered")

    assert "refused the credentials" in fatal_reason(error_of(f"redis://:nope@127.0.0.1:{p}"))
    assert "wants a password" in fatal_reason(error_of(f"redis://127.0.0.1:{p}"))
    assert "NOPERM" in fatal_reason(error_of(f"redis://noping:noping-pw@127.0.0.1:{p}"))
    assert fatal_reason(error_of(f"redis://127.0.0.1:{free_port()}")) is None  # connection refused
    # replies a busy or failing-over Redis gives: retried, never fatal
    for text in ("LOADING Redis is loading the dataset in memory", "BUSY Redis is busy running a script",
                 "MASTERDOWN Link with MASTER is down", "TRYAGAIN Multiple keys request during rehashing",
                 "CLUSTERDOWN The cluster is down", "READONLY You can't write against a read only replica."):
        exc = redis.exceptions.ResponseError(text)
        assert fatal_reason(exc) is None, text
    assert fatal_reason(redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory")) is None
    assert fatal_reason(redis.exceptions.TimeoutError("Timeout connecting to server")) is None
    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert fatal_reason(again) is None
    assert "does not resolve" in fatal_reason(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))


def test_preflight_refuses_a_single_redis_given_as_cluster_or_sentinel(redis_url):
    address = redis_url.split("//", 1)[1].split("/", 1)[0]
    with pytest.raises(RedisConfigurationError, match="is not a Redis Cluster"):
        preflight(f"redis+cluster://{address}")
    with pytest.raises(RedisConfigurationError, match="is not a Sentinel"):
        preflight(f"redis+sentinel://{address}?master=mymaster")


def test_preflight_passes_a_good_redis_and_returns_a_transient_error(secured):
    assert preflight(f"redis://alice:alice-pw@127.0.0.1:{secured.port}/0") is None
    problem = preflight(f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(problem, redis.ConnectionError)
    with pytest.raises(RedisConfigurationError) as err:
        preflight(f"redis://alice:not-alice-pw@127.0.0.1:{secured.port}/0")
    assert "not-alice-pw" not in str(err.value) and err.value.url.startswith("redis://alice:***@")


def test_tls_to_a_plain_text_port_fails_in_seconds_sync_and_asyncio(secured):
    url = f"rediss://127.0.0.1:{secured.port}/0"  # no socket_connect_timeout: the 5 s default applies
    started = time.monotonic()
    with pytest.raises(TLSHandshakeError) as err:
        fastq.connection.sync_client(url, socket_timeout=60).ping()
    assert time.monotonic() - started < 9 and err.value.plain_text, err.value
    assert "redis://" in str(err.value)

    async def async_side():
        client = fastq.connection.async_client(url)
        try:
            await client.ping()
        finally:
            await client.aclose()

    started = time.monotonic()
    with pytest.raises(TLSHandshakeError) as err:
        asyncio.run(async_side())
    assert time.monotonic() - started < 9 and err.value.plain_text, err.value
    assert fatal_reason(err.value) is not None


def test_a_tls_handshake_to_a_paused_server_times_out_and_stays_transient(tmp_path):
    """A server that accepted the TCP connection but answers nothing (paused): the handshake gives
    up after 5 s by default, and it is not called fatal (the plain-text probe gets no answer either)."""
    server = RedisServer(tmp_path)
    server.start()
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TLSHandshakeError) as err:
            fastq.connection.sync_client(f"rediss://127.0.0.1:{server.port}/0").ping()
        elapsed = time.monotonic() - started
        assert 4 < elapsed < 9, elapsed
        assert err.value.timed_out and not err.value.plain_text
        assert fatal_reason(err.value) is None
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


# ---------------------------------------------------------------- transient: keep running, then serve

def _supervisor(tmp_path, url: str, *extra: str) -> subprocess.Popen:
    (tmp_path / "fatal_app.py").write_text(APP)
    log = open(tmp_path / "supervisor.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "fatal_app:mux", "--redis-url", url,
                             "--processes", "1", "--shutdown-timeout", "1", "--poll-interval", "0.05", *extra],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=_env(tmp_path))
    log.close()
    return proc


def _children(proc: subprocess.Popen) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(proc.pid).children()]
    except psutil.NoSuchProcess:
        return []


def _stop(proc: subprocess.Popen, tmp_path) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise AssertionError("did not stop on SIGTERM")
    return code, (tmp_path / "supervisor.log").read_text()


def test_supervisor_keeps_running_while_redis_is_down_and_serves_once_it_starts(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = _supervisor(tmp_path, url)
    try:
        wait_for(lambda: _children(proc), timeout=15, what="a worker started while Redis is down")
        time.sleep(3)  # workers retry; nothing exits
        assert proc.poll() is None, (tmp_path / "supervisor.log").read_text()
        server = RedisServer(tmp_path, port=port)
        server.start()
        try:
            out = tmp_path / "done.txt"
            with fastq.Client(url) as client:
                task_id = client.enqueue(fastq.Task("fatal-test", str(out).encode())).id
            wait_for(lambda: out.exists() and task_id in out.read_text(), timeout=30, what="the task served")
            code, log = _stop(proc, tmp_path)
        finally:
            server.stop()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert code == 0, log
    assert "Traceback" not in log, log
    assert log.count("is not reachable yet") == 1, log


# ---------------------------------------------------------------- SIGTERM in each state: no traceback

def _connected_to(pid: int, port: int) -> bool:
    try:
        return any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.NoSuchProcess:
        return False


def test_sigterm_during_the_start_up_check_ends_the_supervisor_quietly(tmp_path):
    server = RedisServer(tmp_path)  # paused: it takes the TCP connection and never answers the PING
    server.start()
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        proc = _supervisor(tmp_path, server.url)
        try:
            wait_for(lambda: _connected_to(proc.pid, server.port), timeout=20, what="the start-up PING")
            assert not _children(proc)
            started = time.monotonic()
            code, log = _stop(proc, tmp_path)
            assert time.monotonic() - started < 2.5, log
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "SIGTERM received before the workers started" in log, log


def test_sigterm_while_workers_retry_an_unreachable_redis_has_no_traceback(tmp_path):
    (tmp_path / "sched_app.py").write_text(SCHED_APP)
    proc = _supervisor(tmp_path, f"redis://127.0.0.1:{free_port()}/0", "--scheduler", "sched_app:scheduler")
    try:
        wait_for(lambda: len(_children(proc)) == 2, timeout=15, what="a worker and the scheduler")
        time.sleep(2)  # the worker is in its retry loop
        code, log = _stop(proc, tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert code == 0, log
    assert "Traceback" not in log, log


def test_scheduler_sigterm_during_the_check_and_while_retrying_has_no_traceback(tmp_path):
    (tmp_path / "sched_app.py").write_text(SCHED_APP)

    def start(url: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "fastq.cli.scheduler", "sched_app:scheduler", "--redis-url",
                                 url], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=_env(tmp_path))

    server = RedisServer(tmp_path)
    server.start()
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        proc = start(server.url)
        wait_for(lambda: _connected_to(proc.pid, server.port), timeout=20, what="the start-up PING")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "Traceback" not in out, out
        assert "SIGTERM received before the scheduler started" in out, out
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
    proc = start(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens: it warns once and runs, retrying
    try:
        time.sleep(4)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert out.count("is not reachable yet") == 1, out


# ---------------------------------------------------------------- the unauthenticated /metrics endpoint

@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_metrics_on_a_non_loopback_address_logs_one_warning(host, warned, redis_url, tmp_path):
    pytest.importorskip("prometheus_client")
    proc = _supervisor(tmp_path, redis_url, "--metrics-port", "0", "--metrics-host", host)
    try:
        wait_for(lambda: "started worker" in (tmp_path / "supervisor.log").read_text(), timeout=20,
                 what="the supervisor started")
        code, log = _stop(proc, tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert code == 0 and "Traceback" not in log, log
    lines = [line for line in log.splitlines() if "has no authentication" in line]
    assert len(lines) == (1 if warned else 0), log
    if warned:
        assert "WARNING" in lines[0] and host in lines[0]


def test_a_worker_refused_after_a_password_change_exits_with_one_line_and_the_supervisor_goes_on(tmp_path):
    """The supervisor checked Redis at start; later the password changes and a worker is replaced:
    the new worker ends at once with one line and exit code 4 (no traceback, no retry loop inside it),
    and the supervisor keeps restarting it with back-off until the URL works again."""
    server = RedisServer(tmp_path, extra=["--requirepass", "first-pw"])
    server.start()
    admin = redis.Redis(port=server.port, password="first-pw")
    try:
        proc = _supervisor(tmp_path, f"redis://:first-pw@127.0.0.1:{server.port}/0")
        (worker,) = wait_for(lambda: len(c := _children(proc)) == 1 and c, timeout=15, what="a worker")
        wait_for(lambda: admin.zcard("asynq:servers"), timeout=15, what="the worker registered")
        admin.config_set("requirepass", "second-pw")
        admin = redis.Redis(port=server.port, password="second-pw")
        os.kill(worker, signal.SIGKILL)
        log_path = tmp_path / "supervisor.log"
        wait_for(lambda: "exit code 4" in log_path.read_text(), timeout=15, what="the refused worker's exit")
        assert proc.poll() is None
        code, log = _stop(proc, tmp_path)
        assert code == 0
        assert "refused the credentials" in log and "Redis refused the worker" in log
        assert "Traceback" not in log
    finally:
        admin.close()
        server.stop()


def test_an_in_process_worker_refused_by_redis_returns_at_once(secured):
    worker = fastq.Worker(lambda task: None, fastq.WorkerConfig(redis_url=f"redis://:wrong@127.0.0.1:{secured.port}/0"))
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(worker.run(), 10))
    assert worker.exit_code == 4 and time.monotonic() - started < 5
