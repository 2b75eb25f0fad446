"""Start-up faults (issue 13, item 5): a Redis that refuses fastq for good is not retried forever."""
from __future__ import annotations

import socket
import time

from harness import wait

LIMIT = 10.0  # seconds from the start of fastq-supervisor to its exit (the bound)


def _unknown_host() -> str | None:
    host = "no-such-redis-host.invalid"  # RFC 2606: never resolves
    try:
        socket.getaddrinfo(host, 6379)
    except socket.gaierror as exc:
        return host if exc.errno == socket.EAI_NONAME else None
    return None


def test_f1_fatal_credentials_unknown_user_unknown_host_tls_to_plain_port_exit_at_once(h):
    """F1 fatal credentials / unknown user / unknown host / TLS to plain port: exit non-zero within
    10 s with one line, no traceback; nothing is taken from the queue. The same supervisor with the
    right URL then serves every task."""
    h.r.acl_setuser("fastq", enabled=True, passwords=["+right-pw"], keys=["*"], channels=["*"], commands=["+@all"])
    ids = h.enqueue(50, sleep=0.01)
    port = h.server.port
    host = _unknown_host()
    cases = {
        "wrong password": (f"redis://fastq:wrong-pw@127.0.0.1:{port}/0", "refused the credentials (WRONGPASS"),
        "unknown user": (f"redis://nobody:any-pw@127.0.0.1:{port}/0", "refused the credentials (WRONGPASS"),
        "unknown host": (f"redis://{host}:{port}/0", "does not resolve") if host else None,
        "TLS to plain port": (f"rediss://127.0.0.1:{port}/0", "is this port TLS? It speaks plain text"),
    }
    took = {}
    for case, spec in cases.items():
        if spec is None:
            print(f"F1 {case}: skipped (the resolver does not answer EAI_NONAME for .invalid names)")
            continue
        url, fragment = spec
        started = time.monotonic()
        sup = h.supervisor(2, url=url)
        wait(lambda: sup.poll() is not None, LIMIT + 5, f"fastq-supervisor to exit ({case})")
        took[case] = elapsed = time.monotonic() - started
        log = h.log(sup)
        assert sup.returncode != 0, (case, log)
        assert "Traceback" not in log, (case, log)
        lines = log.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fastq-supervisor: error: Redis at ") and fragment in lines[0], \
            (case, log)
        assert "wrong-pw" not in log and "any-pw" not in log, log
        assert elapsed < LIMIT, f"{case}: exited after {elapsed:.1f}s"
    print("F1 exit after " + ", ".join(f"{case} {t:.2f}s" for case, t in took.items()))
    assert not h.ledger.ids("start"), "a supervisor that refused to start ran tasks"
    assert h.backlog() == len(ids)
    sup = h.supervisor(2, url=f"redis://fastq:right-pw@127.0.0.1:{port}/0")
    h.quiesce(60)
    assert h.stop(sup) == 0
    assert "Traceback" not in h.log(sup)
    report = h.report()
    report.assert_ok()
    assert report.completed == len(ids)


def test_f2_redis_down_at_start_is_transient_workers_retry_then_serve(h):
    """F2 Redis down at start (nothing listens on its port): one WARNING, the workers start and
    retry; once Redis is up every task is served, and SIGTERM then leaves no traceback."""
    h.server.stop()
    sup = h.supervisor(2)
    h.wait_workers(sup, 2, timeout=20)
    time.sleep(2)  # the workers are retrying
    assert sup.poll() is None, h.log(sup)
    h.server.start()  # same port
    ids = h.enqueue(50, sleep=0.01)
    h.quiesce(60)
    assert h.stop(sup) == 0
    log = h.log(sup)
    assert "Traceback" not in log, log
    assert log.count("is not reachable yet") == 1, log
    report = h.report()
    report.assert_ok()
    assert report.completed == len(ids)
