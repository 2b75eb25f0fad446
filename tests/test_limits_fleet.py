"""Rate and concurrency limits across a fleet: real ``fastq-supervisor module:app`` processes
(2 worker processes each) on the session's Redis.

* a rate of 100/s holds within 10 % over 10 s;
* a concurrency limit of 5 holds under 2 processes x 100 concurrency, and is reached;
* per-key concurrency limits hold per key;
* the slot of a SIGKILLed worker comes back (with its lease) and the waiting tasks then run.

Handlers record what they see in Redis (start times, a running counter and its peak)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Callable

import pytest

import fastq
from fastq import keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastq.__file__)))  # the fastq under test

APP = textwrap.dedent('''
    import os, time
    import redis
    import fastq

    URL, Q = os.environ["APP_REDIS_URL"], os.environ["LIM_QUEUE"]
    app = fastq.App(URL, forward_interval=0.2)
    _clients = {}
    PEAK = """
    local n = redis.call('INCR', KEYS[1])
    if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
    return n
    """

    def rc():
        pid = os.getpid()
        if pid not in _clients:
            _clients[pid] = redis.Redis.from_url(URL)
        return _clients[pid]

    def running(key, seconds):
        c = rc()
        c.eval(PEAK, 2, Q + ":running:" + key, Q + ":peak:" + key)
        c.eval(PEAK, 2, Q + ":running:all", Q + ":peak:all")
        time.sleep(seconds)
        c.decr(Q + ":running:" + key)
        c.decr(Q + ":running:all")

    @app.task(name="lim:rate", queue=Q, rate_limit="100/s")
    def rated(n: int) -> None:
        rc().rpush(Q + ":starts", repr(time.time()))

    @app.task(name="lim:conc", queue=Q, concurrency_limit=5)
    def conc(n: int) -> None:
        running("conc", 0.05)
        rc().incr(Q + ":done")

    @app.task(name="lim:perkey", queue=Q, concurrency_limit=2, concurrency_key=lambda customer, **_: customer)
    def perkey(customer: str, n: int) -> None:
        running(customer, 0.05)
        rc().incr(Q + ":done")

    @app.task(name="lim:hold", queue=Q, concurrency_limit=1)
    def hold(n: int) -> None:
        c = rc()
        c.rpush(Q + ":holders", f"{os.getpid()}:{n}")
        c.set(Q + ":hold-started:" + str(n), repr(time.time()))
        running("hold", 0)
        while c.exists(Q + ":block"):
            time.sleep(0.05)
        c.incr(Q + ":done")
''')


@pytest.fixture
def fleet(tmp_path, redis_url):
    queue = f"limf-{uuid.uuid4().hex[:8]}"
    (tmp_path / "lim_app.py").write_text(APP)
    env = {"APP_REDIS_URL": redis_url, "LIM_QUEUE": queue, "PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{ROOT}",
           "FASTQ_NO_UVLOOP": os.environ.get("FASTQ_NO_UVLOOP", "")}
    os.environ.update(APP_REDIS_URL=redis_url, LIM_QUEUE=queue)
    sys.path.insert(0, str(tmp_path))
    sys.modules.pop("lim_app", None)
    import lim_app

    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "fastq.cli.supervisor", "lim_app:app", "--processes", "2", "--concurrency", "100",
               "--queues", queue, *args]
        with (tmp_path / f"supervisor-{len(procs)}.log").open("w") as log:  # the child keeps its own copy
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        procs.append(proc)
        return proc

    yield lim_app, queue, start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    lim_app.app.close()
    sys.path.remove(str(tmp_path))
    sys.modules.pop("lim_app", None)


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_a_rate_of_100_per_second_holds_within_10_percent_over_10_seconds_across_two_processes(fleet, r):
    mod, q, start = fleet
    mod.rated.enqueue_many([(i,) for i in range(1500)])
    start()
    assert wait_for(lambda: r.llen(q + ":starts") >= 1500, 60), r.llen(q + ":starts")
    starts = sorted(float(x) for x in r.lrange(q + ":starts", 0, -1))
    t0 = starts[0] + 2.0  # past the start-up of the two processes
    in_window = sum(1 for t in starts if t0 <= t < t0 + 10.0)
    print(f"\nrate test: {in_window} starts in 10 s, overall {(len(starts) - 1) / (starts[-1] - starts[0]):.1f}/s")
    assert 900 <= in_window <= 1100, in_window
    overall = (len(starts) - 1) / (starts[-1] - starts[0])
    assert 90 <= overall <= 110, overall
    assert not r.exists(keys.failed_total_key(q)) and r.zcard(keys.retry_key(q)) == 0


def test_a_concurrency_limit_holds_across_two_processes_of_100_and_is_reached(fleet, r):
    mod, q, start = fleet
    mod.conc.enqueue_many([(i,) for i in range(150)])
    start()
    assert wait_for(lambda: int(r.get(q + ":done") or 0) == 150, 90), r.get(q + ":done")
    assert int(r.get(q + ":peak:conc")) == 5  # never above the limit, and the limit was used
    assert not r.exists(keys.failed_total_key(q))
    assert wait_for(lambda: r.zcard(keys.slots_key(q, "lim:conc")) == 0, 5)
    servers = {m.decode() for m in r.zrange(keys.ALL_SERVERS, 0, -1)}
    assert len(servers) >= 2  # two worker processes took part


def test_per_key_concurrency_limits_hold_per_key(fleet, r):
    mod, q, start = fleet
    mod.perkey.enqueue_many([(c, i) for i in range(30) for c in ("acme", "globex")])
    start()
    assert wait_for(lambda: int(r.get(q + ":done") or 0) == 60, 90), r.get(q + ":done")
    assert int(r.get(q + ":peak:acme")) == 2 and int(r.get(q + ":peak:globex")) == 2
    assert int(r.get(q + ":peak:all")) > 2  # the keys do not share one limit


def test_the_slot_of_a_sigkilled_worker_comes_back_with_its_lease(fleet, r):
    """The killed run's task is archived (max_retry=0) so nothing inherits its slot: the slot comes
    back when its lease ends, and the task waiting for it runs then, not before."""
    mod, q, start = fleet
    r.set(q + ":block", 1)
    first = mod.hold.options(max_retry=0).enqueue(1)
    start("--lease-duration", "4", "--processes", "1")
    assert wait_for(lambda: r.llen(q + ":holders") == 1, 30)
    second = mod.hold.enqueue(2)
    assert wait_for(lambda: r.zscore(keys.scheduled_key(q), second.id) is not None, 10)  # waits for the slot
    slots = keys.slots_key(q, "lim:hold")
    assert r.zrange(slots, 0, -1) == [first.id.encode()]
    pid = int(r.lindex(q + ":holders", 0).decode().split(":")[0])
    r.delete(q + ":block")
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    # the supervisor settles the dead worker's claim at once (archived: no retries left) ...
    assert wait_for(lambda: r.zscore(keys.archived_key(q), first.id) is not None, 10)
    expiry = r.zscore(slots, first.id)
    assert expiry is not None  # ... but the slot is a lease: it stays until it expires
    assert wait_for(lambda: int(r.get(q + ":done") or 0) == 1, 40), r.lrange(q + ":holders", 0, -1)
    runs = [x.decode() for x in r.lrange(q + ":holders", 0, -1)]
    assert runs[-1].endswith(":2") and runs[-1].split(":")[0] != str(pid)
    started = float(r.get(q + ":hold-started:2"))
    assert started >= expiry - 1 and started > killed  # not before the dead run's slot expired
    assert int(r.get(q + ":peak:hold")) == 1
    assert wait_for(lambda: r.zcard(slots) == 0, 5)
