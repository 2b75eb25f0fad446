"""Scheduler and PeriodicTaskManager against a real redis-server: Go's key layout, ticks, guards, cleanup."""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone

import pytest
import redis
from helpers import dump, wait_for

import fastq
from fastq import keys
from fastq._codec import decode_message
from fastq._proto import SchedulerEnqueueEvent, SchedulerEntry, Timestamp, decode
from fastq.errors import (
    ConfigProviderError,
    CronSpecError,
    DuplicateTaskError,
    InvalidOptionError,
    SchedulerEntryNotFoundError,
    TimeZoneError,
)
from fastq.scheduler import (
    GO_ZERO_TIME,
    MAX_HISTORY,
    PeriodicTaskConfig,
    PeriodicTaskManager,
    Scheduler,
    run_scheduler,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def services():
    """Started schedulers/managers, stopped at teardown even when a test fails."""
    started: list = []
    yield started
    for s in started:
        s.stop()


def start(services: list, service):
    service.start()
    services.append(service)
    return service


def entries_key(r: redis.Redis) -> str:
    members = r.zrange(keys.ALL_SCHEDULERS, 0, -1)
    assert len(members) == 1, members
    return members[0].decode()


def stored_entries(r: redis.Redis, key: str) -> list[SchedulerEntry]:
    return [decode(SchedulerEntry, b) for b in r.lrange(key, 0, -1)]


def history(r: redis.Redis, entry_id: str) -> list[tuple[SchedulerEnqueueEvent, float]]:
    return [(decode(SchedulerEnqueueEvent, m), s)
            for m, s in r.zrange(keys.scheduler_history_key(entry_id), 0, -1, withscores=True)]


def pending(r: redis.Redis, queue: str = "default") -> list[str]:
    return [x.decode() for x in r.lrange(keys.pending_key(queue), 0, -1)]


# ---------------------------------------------------------------- firing and Go's layout

def test_every_second_enqueues_and_records_history(r, redis_url, services):
    s = Scheduler(redis_url, heartbeat_interval=1)
    eid = s.register("@every 1s", fastq.Task("ping", b"x"), queue="critical", max_retry=5, timeout=90)
    start(services, s)
    ids = wait_for(lambda: len(pending(r, "critical")) >= 2 and pending(r, "critical"), timeout=5, what="2 ticks")
    for tid in ids:
        msg = decode_message(r.hget(keys.task_key("critical", tid), "msg"))
        assert (msg.type, msg.payload, msg.queue, msg.retry, msg.timeout) == ("ping", b"x", "critical", 5, 90)
    assert b"critical" in r.smembers(keys.ALL_QUEUES)
    events = wait_for(lambda: len(history(r, eid)) >= len(ids) and history(r, eid), timeout=2, what="history")
    recorded = {e.task_id for e, _ in events}
    assert set(ids) <= recorded
    for event, score in events:
        assert score == event.enqueue_time.seconds and abs(score - time.time()) < 10
    ticks = sorted(e.enqueue_time.seconds for e, _ in events)
    assert len(set(ticks)) == len(ticks), "one enqueue per one-second tick"


def test_heartbeat_writes_go_layout(r, redis_url, services):
    s = Scheduler(redis_url, heartbeat_interval=1)
    deadline = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    e_every = s.register("@every 1s", fastq.Task("a"))
    e_hourly = s.register("@hourly", fastq.Task("b", b"\x00\xff"), queue='q"1', timeout=5400, deadline=deadline,
                          unique=3600, retention=86400, process_in=10, group="g")
    e_yearly = s.register("CRON_TZ=America/New_York 0 9 1 1 *", fastq.Task("c"), task_id="fixed", max_retry=0)
    start(services, s)
    key = entries_key(r)
    assert key == keys.scheduler_entries_key(s.id) and key.startswith("asynq:schedulers:{")
    host, pid, uid = s.id.rsplit(":", 2)
    assert int(pid) == os.getpid() and len(uid) == 36 and host
    score = r.zscore(keys.ALL_SCHEDULERS, key)
    assert score == int(score) and abs(score - (time.time() + 2)) <= 1.5
    assert 0 < r.pttl(key) <= 2000  # TTL = 2 x heartbeat interval
    entries = stored_entries(r, key)
    # Go LPUSHes cron's entries (sorted by next run), so the list holds them latest-first.
    assert [e.id for e in entries] == [e_yearly, e_hourly, e_every]
    by_id = {e.id: e for e in entries}
    hourly = by_id[e_hourly]
    assert (hourly.spec, hourly.task_type, hourly.task_payload) == ("@hourly", "b", b"\x00\xff")
    assert hourly.enqueue_options == ['Queue("q\\"1")', "Timeout(1h30m0s)", "Deadline(Wed Jan  2 03:04:05 UTC 2030)",
                                      "Unique(1h0m0s)", "Retention(24h0m0s)", "ProcessIn(10s)", 'Group("g")']
    assert hourly.next_enqueue_time == Timestamp((int(time.time()) // 3600 + 1) * 3600, 0)
    assert hourly.prev_enqueue_time == GO_ZERO_TIME  # never run: Go's zero time, not an absent field
    yearly = by_id[e_yearly]
    assert yearly.enqueue_options == ['TaskID("fixed")', "MaxRetry(0)"]
    nxt = yearly.next_enqueue_time.to_datetime()
    assert (nxt.month, nxt.day, nxt.hour, nxt.minute) == (1, 1, 14, 0)  # 09:00 EST
    # after a tick, prev is that tick and next the one after
    wait_for(lambda: stored_entries(r, key)[-1].prev_enqueue_time != GO_ZERO_TIME, timeout=4,
             what="a beat after a tick")
    every = stored_entries(r, key)[-1]
    assert every.next_enqueue_time.seconds == every.prev_enqueue_time.seconds + 1
    assert every.prev_enqueue_time.nanos == 0


def test_history_is_trimmed_to_the_newest_1000(r, redis_url, services):
    s = Scheduler(redis_url, heartbeat_interval=5)
    eid = s.register("@every 1s", fastq.Task("h"))
    hkey = keys.scheduler_history_key(eid)
    r.zadd(hkey, {f"old-{i}".encode(): i for i in range(MAX_HISTORY + 5)})
    start(services, s)
    tid = wait_for(lambda: pending(r) and pending(r)[0], timeout=3, what="a tick")
    wait_for(lambda: newest_event_task_id(r, hkey) == tid, timeout=2, what="the enqueue event")
    assert r.zcard(hkey) == MAX_HISTORY
    members = r.zrange(hkey, 0, -1)
    assert members[0] == b"old-6" and b"old-5" not in members  # the 6 oldest went, 999 stay + the new one


def newest_event_task_id(r: redis.Redis, hkey: str) -> str:
    (newest,) = r.zrange(hkey, -1, -1)
    return decode(SchedulerEnqueueEvent, newest).task_id if not newest.startswith(b"old-") else ""


def test_two_schedulers_enqueue_each_tick_once(r, redis_url, services):
    task = fastq.Task("report:build", b'{"n":1}')
    a, b = Scheduler(redis_url, heartbeat_interval=1), Scheduler(redis_url, heartbeat_interval=1)
    [a.register("@every 1s", task, queue="reports", retention=60),
           b.register("@every 1s", task, retention=60, queue="reports")]  # option order does not matter
    start(services, a)
    start(services, b)
    time.sleep(3.2)
    a.stop()
    b.stop()
    tasks = pending(r, "reports")
    guards = [k.decode() for k in r.keys("asynq:scheduler_tick:*")]
    ticks = sorted(int(k.rsplit(":", 1)[1]) for k in guards)
    assert len(tasks) >= 2 and len(tasks) == len(ticks) == len(set(ticks))
    assert all(0 < r.ttl(k) <= 600 for k in guards)
    assert {r.get(k).decode() for k in guards} <= {a.id, b.id}
    assert a.id != b.id


def test_a_different_task_on_the_same_schedule_is_not_deduplicated(r, redis_url, services):
    a, b = Scheduler(redis_url, heartbeat_interval=1), Scheduler(redis_url, heartbeat_interval=1)
    a.register("@every 1s", fastq.Task("t", b"1"))
    b.register("@every 1s", fastq.Task("t", b"2"))
    start(services, a)
    start(services, b)
    wait_for(lambda: len(pending(r)) >= 4, timeout=4, what="two ticks of both")
    payloads = [decode_message(r.hget(keys.task_key("default", t), "msg")).payload for t in pending(r)]
    assert payloads.count(b"1") >= 2 and payloads.count(b"2") >= 2


def test_hooks_see_each_enqueue_and_errors(r, redis_url, services):
    seen: list = []
    s = Scheduler(redis_url, heartbeat_interval=1, pre_enqueue=lambda task, opts: seen.append(("pre", task.type, opts)),
                  post_enqueue=lambda info, err: seen.append(("post", info and info.id, type(err).__name__)))
    eid = s.register("@every 1s", fastq.Task("once"), unique=3600)
    start(services, s)
    wait_for(lambda: len(seen) >= 4, timeout=4, what="two firings")
    s.stop()
    assert seen[0] == ("pre", "once", {"unique": 3600})
    (tid,) = pending(r)
    assert seen[1] == ("post", tid, "NoneType")
    assert seen[3] == ("post", None, DuplicateTaskError.__name__)
    assert history(r, eid) == []  # cleared at shutdown


def test_shutdown_clears_entries_and_history(r, redis_url, services):
    s = Scheduler(redis_url, heartbeat_interval=1)
    eid = s.register("@every 1s", fastq.Task("x"))
    start(services, s)
    key = entries_key(r)
    wait_for(lambda: r.exists(keys.scheduler_history_key(eid)), timeout=3, what="history")
    s.stop()
    assert not r.exists(key) and r.zcard(keys.ALL_SCHEDULERS) == 0
    assert not r.exists(keys.scheduler_history_key(eid))
    assert pending(r)  # enqueued tasks stay
    with pytest.raises(RuntimeError, match="stopped"):
        s.start()


def test_register_and_unregister_while_running(r, redis_url, services):
    s = Scheduler(redis_url, heartbeat_interval=30)
    keep = s.register("@yearly", fastq.Task("keep"))
    start(services, s)
    key = entries_key(r)
    gone = s.register("@every 1s", fastq.Task("gone"))
    wait_for(lambda: len(r.lrange(key, 0, -1)) == 2, timeout=2, what="a beat after register")
    wait_for(lambda: r.exists(keys.scheduler_history_key(gone)), timeout=3, what="a tick of the new entry")
    s.unregister(gone)
    wait_for(lambda: [e.id for e in stored_entries(r, key)] == [keep], timeout=2, what="a beat after unregister")
    wait_for(lambda: not r.exists(keys.scheduler_history_key(gone)), timeout=2, what="its history deleted")
    with pytest.raises(SchedulerEntryNotFoundError):
        s.unregister(gone)


def test_location_sets_the_zone_of_specs(r, redis_url, services):
    s = Scheduler(redis_url, location="Asia/Tokyo", heartbeat_interval=1)
    s.register("0 9 * * *", fastq.Task("morning"))
    start(services, s)
    (entry,) = stored_entries(r, entries_key(r))
    assert entry.next_enqueue_time.to_datetime().hour == 0  # 09:00 in Tokyo is 00:00 UTC


# ---------------------------------------------------------------- bad input: clear errors, nothing written

@pytest.mark.parametrize("spec", ["* * * *", "@every 0s", "CRON_TZ=No/Where * * * * *", "61 * * * *", ""])
def test_bad_spec_is_refused_at_register(r, redis_url, spec):
    s = Scheduler(redis_url)
    with pytest.raises(CronSpecError):
        s.register(spec, fastq.Task("t"))
    assert s.entries() == [] and dump(r) == {}


def test_bad_options_and_tasks_are_refused_at_register(r, redis_url):
    s = Scheduler(redis_url)
    with pytest.raises(TypeError, match="unknown enqueue option 'queu'"):
        s.register("@daily", fastq.Task("t"), queu="x")
    with pytest.raises(InvalidOptionError, match="max_retry"):
        s.register("@daily", fastq.Task("t"), max_retry=-1)
    with pytest.raises(TypeError, match="fastq.Task"):
        s.register("@daily", "t")  # type: ignore[arg-type]
    assert s.entries() == [] and dump(r) == {}


@pytest.mark.parametrize("kwargs, error, text", [
    ({"location": "Mars/Olympus"}, TimeZoneError, "Mars/Olympus"),
    ({"location": ""}, TimeZoneError, "non-empty"),
    ({"heartbeat_interval": -1}, InvalidOptionError, "heartbeat_interval"),
    ({"heartbeat_interval": 0}, InvalidOptionError, "heartbeat_interval"),
    ({"heartbeat_interval": float("nan")}, InvalidOptionError, "heartbeat_interval"),
    ({"pre_enqueue": "not callable"}, TypeError, "pre_enqueue"),
    ({"redis": "nope://127.0.0.1"}, ValueError, "invalid Redis URL"),
])
def test_bad_scheduler_settings(r, redis_url, kwargs, error, text):
    kwargs.setdefault("redis", redis_url)
    with pytest.raises(error, match=text):
        Scheduler(**kwargs)
    assert dump(r) == {}


def test_a_sync_redis_client_is_refused(r):
    with pytest.raises(TypeError, match="redis.asyncio.Redis"):
        Scheduler(r)


def test_bad_sync_interval_and_provider(redis_url):
    with pytest.raises(InvalidOptionError, match="sync_interval"):
        PeriodicTaskManager(lambda: [], redis_url, sync_interval=-3)
    with pytest.raises(TypeError, match="get_configs"):
        PeriodicTaskManager(42, redis_url)


# ---------------------------------------------------------------- PeriodicTaskManager

class ListProvider:
    def __init__(self, configs: list) -> None:
        self.configs = configs
        self.calls = 0
        self.fail = False

    def get_configs(self) -> list:
        self.calls += 1
        if self.fail:
            raise ConnectionError("config store down")
        return list(self.configs)


def test_config_hash_matches_go_formula():
    import hashlib

    c = PeriodicTaskConfig("@every 1m", fastq.Task("t", b"p"), {"queue": "q", "max_retry": 3})
    expected = hashlib.sha256(b"@every 1mtp" + b"MaxRetry(3)" + b'Queue("q")').hexdigest()
    assert c.hash() == expected
    assert PeriodicTaskConfig("@every 1m", fastq.Task("t", b"p"), {"max_retry": 3, "queue": "q"}).hash() == expected
    assert PeriodicTaskConfig("@every 1m", fastq.Task("t", b"P"), {"queue": "q", "max_retry": 3}).hash() != expected


def test_provider_sync_adds_and_removes_entries(r, redis_url, services):
    a = PeriodicTaskConfig("@yearly", fastq.Task("a"))
    b = PeriodicTaskConfig("@monthly", fastq.Task("b"), {"queue": "low"})
    c = PeriodicTaskConfig("@every 1s", fastq.Task("c"))
    provider = ListProvider([a, b])
    mgr = start(services, PeriodicTaskManager(provider, redis_url, sync_interval=0.2, heartbeat_interval=30))
    key = entries_key(r)
    first = {e.task_type: e.id for e in stored_entries(r, key)}
    assert set(first) == {"a", "b"}
    provider.configs = [a, c]
    wait_for(lambda: {e.task_type for e in stored_entries(r, key)} == {"a", "c"}, timeout=3, what="sync")
    now = {e.task_type: e.id for e in stored_entries(r, key)}
    assert now["a"] == first["a"]  # an unchanged config keeps its entry
    wait_for(lambda: pending(r), timeout=3, what="the new entry fires")
    provider.fail = True  # a failing later sync keeps what is there
    calls = provider.calls
    wait_for(lambda: provider.calls > calls + 1, timeout=3, what="failed syncs")
    assert {e.task_type for e in stored_entries(r, key)} == {"a", "c"}
    mgr.stop()
    assert dump(r, "asynq:schedulers*") == {} and not r.exists(keys.scheduler_history_key(now["c"]))


def test_async_provider_and_callable_provider(r, redis_url, services):
    class AsyncProvider:
        async def get_configs(self):
            return [PeriodicTaskConfig("@daily", fastq.Task("async"))]

    start(services, PeriodicTaskManager(AsyncProvider(), redis_url))
    start(services, PeriodicTaskManager(lambda: [PeriodicTaskConfig("@daily", fastq.Task("plain"))], redis_url))
    wait_for(lambda: r.zcard(keys.ALL_SCHEDULERS) == 2, timeout=2, what="two schedulers")
    types = {decode(SchedulerEntry, b).task_type
             for k in r.zrange(keys.ALL_SCHEDULERS, 0, -1) for b in r.lrange(k, 0, -1)}
    assert types == {"async", "plain"}


@pytest.mark.parametrize("answer, text", [
    (ConnectionError("store down"), "initial call to get_configs() failed: ConnectionError: store down"),
    (None, "must return a list"),
    (["@daily"], "item 0 is a str"),
    ([PeriodicTaskConfig("@daily", fastq.Task("ok")), PeriodicTaskConfig("@every nope", fastq.Task("bad"))],
     "invalid periodic task config ('@every nope', 'bad')"),
    (lambda: [PeriodicTaskConfig("@daily", fastq.Task("bad"), {"max_retry": "x"})],
     "InvalidOptionError: option 'max_retry' must be an int"),
])
def test_initial_sync_failure_aborts_start(r, redis_url, answer, text):
    def get_configs():
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer

    mgr = PeriodicTaskManager(get_configs, redis_url)
    with pytest.raises(ConfigProviderError) as err:
        mgr.start()
    assert text in str(err.value)
    assert mgr.scheduler.entries() == [] and dump(r) == {}


def test_config_validates_its_fields():
    with pytest.raises(ValueError, match="cronspec"):
        PeriodicTaskConfig("", fastq.Task("t"))
    with pytest.raises(TypeError, match="fastq.Task"):
        PeriodicTaskConfig("@daily", "t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown enqueue option 'retries'"):
        PeriodicTaskConfig("@daily", fastq.Task("t"), {"retries": 3})
    with pytest.raises(InvalidOptionError, match="queue"):
        PeriodicTaskConfig("@daily", fastq.Task("t"), {"queue": " "})
    opts = {"queue": "a"}
    config = PeriodicTaskConfig("@daily", fastq.Task("t"), opts)
    before = config.hash()
    opts["queue"] = "b"
    assert config.hash() == before


# ---------------------------------------------------------------- processes: run_scheduler and fastq-scheduler

APP = '''
import fastq
scheduler = fastq.Scheduler(heartbeat_interval=1)
scheduler.register("@every 1s", fastq.Task("cli:tick"), queue="cli")
not_a_scheduler = 42

class Provider:
    def get_configs(self):
        return [fastq.PeriodicTaskConfig("@every 1s", fastq.Task("cli:provided"), {"queue": "cli"})]

provider = Provider()

class Broken:
    def get_configs(self):
        raise RuntimeError("config table missing")

broken = Broken()
'''


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "cronapp.py").write_text(textwrap.dedent(APP))
    return tmp_path


def cli(app_dir, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(app_dir)]))
    return subprocess.Popen([sys.executable, "-m", "fastq.cli.scheduler", *args], cwd=app_dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("attr", ["scheduler", "provider"])
def test_fastq_scheduler_runs_until_sigterm_and_cleans_up(r, redis_url, app_dir, attr):
    proc = cli(app_dir, f"cronapp:{attr}", "--redis-url", redis_url, "--heartbeat-interval", "0.5")
    try:
        wait_for(lambda: len(pending(r, "cli")) >= 2 or proc.poll() is not None, timeout=8, what="ticks")
        assert proc.poll() is None, proc.stderr.read()
        key = entries_key(r)
        assert 0 < r.pttl(key) <= 1000  # --heartbeat-interval 0.5 -> TTL 1 s
        assert key.split("{", 1)[1].split(":")[1] == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err
    assert r.zcard(keys.ALL_SCHEDULERS) == 0 and not r.keys("asynq:scheduler_history:*")


@pytest.mark.parametrize("args, text", [
    (["nocolon"], "must look like 'module:attribute'"),
    (["missing_module:x"], "cannot import module 'missing_module'"),
    (["cronapp:nope"], "has no attribute 'nope'"),
    (["cronapp:not_a_scheduler"], "not a fastq.Scheduler"),
    (["cronapp:scheduler", "--location", "Mars/Olympus"], "unknown time zone: 'Mars/Olympus'"),
    (["cronapp:scheduler", "--heartbeat-interval", "-1"], "must be a finite number of seconds > 0"),
    (["cronapp:scheduler", "--heartbeat-interval", "soon"], "expected a number of seconds"),
    (["cronapp:scheduler", "--redis-url", "nope://x"], "invalid Redis URL"),
    (["cronapp:scheduler", "--log-level", "LOUD"], "Invalid value for '--log-level': 'LOUD' is not one of"),
])
def test_fastq_scheduler_bad_input_exits_2(r, redis_url, app_dir, args, text):
    proc = cli(app_dir, *args)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2, err
    assert text in err
    assert err.strip().splitlines()[-1].startswith("fastq-scheduler: error:")
    assert dump(r) == {}


def test_fastq_scheduler_exits_1_when_the_first_sync_fails(r, redis_url, app_dir):
    proc = cli(app_dir, "cronapp:broken", "--redis-url", redis_url)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1] == ("fastq-scheduler: error: initial call to get_configs() failed: "
                                            "RuntimeError: config table missing")
    assert dump(r) == {}


def test_run_scheduler_stops_on_event_and_overrides_settings(r, redis_url):
    s = Scheduler("redis://127.0.0.1:1/0", location="UTC", heartbeat_interval=30)  # URL replaced below
    s.register("0 9 * * *", fastq.Task("t"))
    stop = threading.Event()
    result: list = []
    thread = threading.Thread(target=lambda: result.append(
        run_scheduler(s, redis_url, location="Asia/Tokyo", heartbeat_interval=1, stop_event=stop)))
    thread.start()
    try:
        key = wait_for(lambda: r.zcard(keys.ALL_SCHEDULERS) and entries_key(r), timeout=3, what="heartbeat")
        (entry,) = stored_entries(r, key)
        assert entry.next_enqueue_time.to_datetime().hour == 0  # Tokyo
        assert 0 < r.pttl(key) <= 2000
    finally:
        stop.set()
        thread.join(10)
    assert result == [0] and r.zcard(keys.ALL_SCHEDULERS) == 0


def test_run_scheduler_rejects_bad_overrides(r, redis_url):
    s = Scheduler(redis_url)
    with pytest.raises(TimeZoneError):
        run_scheduler(s, location="Nowhere/Land")
    with pytest.raises(InvalidOptionError):
        run_scheduler(s, heartbeat_interval=-1)
    assert dump(r) == {}
    assert math.isclose(s.heartbeat_interval, 10.0) and s.location.key == "UTC"


FORKED = """
import os, sys, time
import fastq
from fastq.scheduler import run_scheduler

s = fastq.Scheduler(sys.argv[1], heartbeat_interval=1)
s.register("@every 1s", fastq.Task("orphan"))
pid = os.fork()
if pid == 0:  # as fastq-supervisor's child: stop when the parent is gone; Ctrl-C belongs to the parent
    os._exit(run_scheduler(s, parent_pid=os.getppid(), handle_sigint=False))
print(pid, flush=True)
time.sleep(2)
"""


def test_run_scheduler_in_a_forked_child_stops_when_the_parent_dies(r, redis_url):
    parent = subprocess.run([sys.executable, "-c", FORKED, redis_url], capture_output=True, text=True, timeout=20,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert parent.returncode == 0, parent.stderr
    child = int(parent.stdout.split()[0])
    assert pending(r), "the child enqueued while its parent lived"

    def child_gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(child_gone, timeout=10, what="the orphaned child to stop")
    assert r.zcard(keys.ALL_SCHEDULERS) == 0 and not r.keys("asynq:schedulers:*")


RUN = """
import sys
import fastq

s = fastq.Scheduler(sys.argv[1], heartbeat_interval=1)
s.register("@every 1s", fastq.Task("run"))
s.run()
print("clean exit")
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_scheduler_run_blocks_until_a_signal(r, redis_url, sig):
    proc = subprocess.Popen([sys.executable, "-c", RUN, redis_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        wait_for(lambda: r.zcard(keys.ALL_SCHEDULERS) == 1 or proc.poll() is not None, timeout=8, what="start")
        assert proc.poll() is None, proc.stderr.read()
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and out.strip() == "clean exit", err
    assert r.zcard(keys.ALL_SCHEDULERS) == 0


def test_an_unexpected_error_in_the_loop_is_logged_once_and_the_scheduler_goes_on(r, redis_url, services, caplog,
                                                                                  monkeypatch):
    """Before, any exception other than a Redis error ended the scheduler's loop (and its ticks)."""
    failures = []
    real = Scheduler._clear_forgotten

    async def flaky(self):
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError("unexpected")
        await real(self)

    monkeypatch.setattr(Scheduler, "_clear_forgotten", flaky)
    s = Scheduler(redis_url, heartbeat_interval=1)
    s.register("@every 1s", fastq.Task("tick"))
    with caplog.at_level(logging.ERROR, logger="fastq.scheduler"):
        start(services, s)
        wait_for(lambda: len(pending(r)) >= 2, timeout=8, what="ticks after the failures")
    assert len(failures) == 2
    assert sum(1 for rec in caplog.records if rec.exc_info) == 1  # one traceback per episode
    assert any("failed again (2 in a row)" in rec.getMessage() for rec in caplog.records)
