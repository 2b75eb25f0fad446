"""The ``fastq`` command against a real redis-server: output, exit codes, bad input.

Commands run through ``fastq.cli.main`` (the console-script entry point, so error
handling is the real one) inside click's stream isolation; one test runs the installed
console script in a subprocess.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import dump, free_port
from test_inspector import seed_golden

import fastq
from fastq import _proto, keys
from fastq.cli import main
from fastq.cli._misc import parse_duration

Q = "default"


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


def fq(redis_url: str | None, *args: str, env: dict | None = None) -> Result:
    """Run ``fastq [--redis-url URL] ARGS`` in-process; return exit code, stdout, stderr."""
    argv = (["--redis-url", redis_url] if redis_url else []) + list(args)
    with CliRunner().isolation(env=env) as streams:
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = streams[0].getvalue().decode(), streams[1].getvalue().decode()
    return Result(code, out, err)


def assert_one_line_error(res: Result, *fragments: str, code: int | None = None) -> None:
    assert res.code != 0, res.out
    if code is not None:
        assert res.code == code, (res.code, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.err
    assert "Traceback" not in res.err + res.out
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def enqueue(redis_url: str, *ids: str, **options) -> None:
    with fastq.Client(redis_url) as client:
        for tid in ids:
            client.enqueue(fastq.Task("email:send", f"payload {tid}".encode()), task_id=tid, **options)


# ---------------------------------------------------------------- happy paths

def test_help_lists_the_commands(redis_url):
    res = fq(None, "--help")
    assert res.code == 0
    for command in ("stats", "queue", "task", "server", "cron", "group", "check", "enqueue"):
        assert command in res.out
    res = fq(None, "task")  # a group alone shows its help
    assert res.code == 0 and "inspect" in res.out and res.err == ""


def test_enqueue_then_list_and_inspect(r, redis_url):
    res = fq(redis_url, "enqueue", "email:send", '{"to": "a"}', "--task-id", "t1", "--max-retry", "3",
             "--timeout", "1m30s", "--retention", "1h")
    assert res.code == 0 and "Enqueued task t1 to queue 'default' (pending)" in res.out
    info = fastq.Inspector(redis_url).get_task_info(Q, "t1")
    assert (info.payload, info.max_retry, info.timeout, info.retention) == (b'{"to": "a"}', 3, 90, 3600)
    res = fq(redis_url, "enqueue", "report", "x", "--process-in", "2h", "--queue", "low", "--json")
    later = res.json()
    assert later["state"] == "scheduled" and later["queue"] == "low"
    res = fq(redis_url, "task", "ls", "--queue", Q, "--state", "pending")
    assert res.code == 0 and "t1" in res.out and "email:send" in res.out and '{"to": "a"}' in res.out
    res = fq(redis_url, "task", "ls", "-q", "low", "-s", "scheduled")
    assert later["id"] in res.out and "(in 1h59m" in res.out
    res = fq(redis_url, "task", "inspect", "-q", Q, "-i", "t1")
    assert res.code == 0 and "State:     pending" in res.out and "Retried:   0/3" in res.out
    res = fq(redis_url, "task", "inspect", "-q", Q, "-i", "t1", "--json")
    assert res.json()["payload"] == '{"to": "a"}' and res.json()["payload_hex"] == b'{"to": "a"}'.hex()


def test_task_pages_are_oldest_first(r, redis_url):
    enqueue(redis_url, *[f"t{i:02d}" for i in range(12)])
    res = fq(redis_url, "task", "ls", "-q", Q, "-s", "pending", "--page", "2", "--size", "5", "--json")
    assert [t["id"] for t in res.json()] == ["t05", "t06", "t07", "t08", "t09"]
    res = fq(redis_url, "task", "ls", "-q", Q, "-s", "pending", "--page", "4", "--size", "5")
    assert res.code == 0 and "No pending tasks in queue 'default' on page 4" in res.out


def test_stats_and_queue_commands(r, redis_url):
    seed_golden(r, "retry")
    enqueue(redis_url, "p1", "p2")
    res = fq(redis_url, "stats", "--json")
    data = res.json()
    assert data["aggregate"]["pending"] == 2 and data["aggregate"]["retry"] == 1
    assert data["aggregate"]["processed"] == 1 and data["aggregate"]["failed"] == 1
    assert [q["queue"] for q in data["queues"]] == [Q] and data["redis"]["version"]
    res = fq(redis_url, "stats")
    assert res.code == 0 and "Task Count by Queue" in res.out and "default" in res.out
    assert fq(redis_url, "queue", "ls").out.split() == [Q]
    res = fq(redis_url, "queue", "inspect", Q, "--json")
    (info,) = res.json()
    assert (info["size"], info["pending"], info["retry"], info["failed_total"]) == (3, 2, 1, 1)
    res = fq(redis_url, "queue", "inspect", Q)
    assert "Size:    3" in res.out and "50.00%" not in res.out and "100.00%" in res.out
    res = fq(redis_url, "queue", "history", Q, "--days", "2", "--json")
    assert [d["processed"] for d in res.json()[Q]] == [1, 0]


def test_pause_unpause_and_rm(r, redis_url):
    enqueue(redis_url, "a")
    r.sadd(keys.ALL_QUEUES, "empty")
    assert fq(redis_url, "queue", "pause", Q).code == 0 and r.exists(keys.paused_key(Q))
    assert_one_line_error(fq(redis_url, "queue", "pause", Q), "already paused")
    assert fq(redis_url, "queue", "unpause", Q).code == 0 and not r.exists(keys.paused_key(Q))
    before = dump(r)
    assert_one_line_error(fq(redis_url, "queue", "pause", Q, "nope"), "queue not found: 'nope'")
    assert dump(r) == before  # all names are checked before anything changes
    assert_one_line_error(fq(redis_url, "queue", "rm", Q), "not empty", "--force")
    assert dump(r) == before
    res = fq(redis_url, "queue", "rm", Q, "empty", "--force")
    assert res.code == 0 and "Removed queue 'default'" in res.out
    assert r.smembers(keys.ALL_QUEUES) == set() and not r.exists(keys.task_key(Q, "a"))


def test_single_task_actions(r, redis_url):
    enqueue(redis_url, "a", "b")
    enqueue(redis_url, "s", process_in=3600)
    assert fq(redis_url, "task", "archive", "-q", Q, "-i", "a").code == 0
    assert r.hget(keys.task_key(Q, "a"), "state") == b"archived"
    assert fq(redis_url, "task", "run", "-q", Q, "-i", "a").code == 0
    assert fq(redis_url, "task", "run", "-q", Q, "-i", "s").code == 0
    assert r.hget(keys.task_key(Q, "s"), "state") == b"pending"
    res = fq(redis_url, "task", "delete", "-q", Q, "-i", "b")
    assert res.code == 0 and "Task b deleted" in res.out and not r.exists(keys.task_key(Q, "b"))
    assert fq(redis_url, "task", "rm", "-q", Q, "-i", "a").code == 0
    assert_one_line_error(fq(redis_url, "task", "run", "-q", Q, "-i", "s"), "already in pending state")


def test_bulk_task_actions(r, redis_url):
    enqueue(redis_url, *[f"s{i}" for i in range(5)], process_in=3600)
    res = fq(redis_url, "task", "archive", "-q", Q, "--all", "--state", "scheduled")
    assert res.code == 0 and "5 tasks archived" in res.out
    res = fq(redis_url, "task", "run", "-q", Q, "--all", "-s", "archived")
    assert "5 tasks moved to pending" in res.out and r.llen(keys.pending_key(Q)) == 5
    res = fq(redis_url, "task", "delete", "-q", Q, "--all", "-s", "pending")
    assert "5 tasks deleted" in res.out and r.dbsize() == 1
    seed_golden(r, "aggregating")
    assert_one_line_error(fq(redis_url, "task", "delete", "-q", Q, "--all", "-s", "aggregating"), "group is required")
    assert "2 tasks deleted" in fq(redis_url, "task", "delete", "-q", Q, "--all", "-s", "aggregating", "-g", "g1").out


def test_server_cron_and_group_listings(r, redis_url):
    seed_golden(r, "active")
    seed_golden(r, "aggregating")
    res = fq(redis_url, "server", "ls")
    assert res.code == 0 and "vm" in res.out and "23104" in res.out and "1/3" in res.out and "default:1" in res.out
    (server,) = fq(redis_url, "server", "ls", "--json").json()
    assert server["active_workers"][0]["task_id"] == "st-active"
    assert "g1" in fq(redis_url, "group", "ls", "-q", Q).out
    assert fq(redis_url, "group", "ls", "-q", Q, "--json").json() == [{"group": "g1", "size": 2}]
    now = int(time.time())
    entry = _proto.SchedulerEntry(id="e1", spec="*/5 * * * *", task_type="report", task_payload=b"p",
                                  enqueue_options=['Queue("low")'], next_enqueue_time=_proto.Timestamp(now + 60))
    r.zadd(keys.ALL_SCHEDULERS, {"asynq:schedulers:{h:1:s}": now + 20})
    r.lpush("asynq:schedulers:{h:1:s}", _proto.encode(entry))
    ev = _proto.SchedulerEnqueueEvent(task_id="tid-1", enqueue_time=_proto.Timestamp(now))
    r.zadd(keys.scheduler_history_key("e1"), {_proto.encode(ev): now})
    res = fq(redis_url, "cron", "ls")
    assert "e1" in res.out and "*/5 * * * *" in res.out and 'Queue("low")' in res.out
    assert fq(redis_url, "cron", "history", "e1", "--json").json()["e1"][0]["task_id"] == "tid-1"
    assert "No enqueue events" in fq(redis_url, "cron", "history", "zzz").out


def test_cancel_publishes_for_a_running_task(r, redis_url):
    seed_golden(r, "active")  # st-active, running in queue default
    listener = r.pubsub()
    listener.subscribe("asynq:cancel")
    try:
        res = fq(redis_url, "task", "cancel", "st-active")
        assert res.code == 0, res.err
        assert "Sent cancelation signal for task st-active in queue 'default' (1 listening worker process)" in res.out
        res = fq(redis_url, "task", "cancel", "-q", Q, "st-active")
        assert res.code == 0, res.err
    finally:
        listener.close()


def test_cancel_of_a_task_that_is_not_running_says_so_and_exits_1(r, redis_url):
    enqueue(redis_url, "p1")
    seed_golden(r, "active")
    listener = r.pubsub()
    listener.subscribe("asynq:cancel")
    try:
        listener.get_message(timeout=1)  # the subscribe confirmation
        res = fq(redis_url, "task", "cancel", "p1")
        assert_one_line_error(res, "task p1 is not running (state: pending); nothing to cancel", code=1)
        assert listener.get_message(timeout=0.2) is None  # no signal was sent
        assert_one_line_error(fq(redis_url, "task", "cancel", "x1"), "task x1 not found in any queue", code=1)
        assert_one_line_error(fq(redis_url, "task", "cancel", "-q", "nope", "p1"), "queue not found: 'nope'")
        res = fq(redis_url, "task", "cancel", "p1", "st-active")  # the running one is still cancelled
        assert res.code == 1 and "Sent cancelation signal for task st-active" in res.out
        assert "Error: task p1 is not running (state: pending)" in res.err
        assert listener.get_message(timeout=1)["data"] == b"st-active"
    finally:
        listener.close()


# ---------------------------------------------------------------- check (liveness probe)

def test_check_needs_a_running_script_not_only_ping(r, redis_url):
    assert fq(redis_url, "check").code == 0
    r.script_flush()
    assert fq(redis_url, "check").code == 0  # reloads the script after NOSCRIPT
    enqueue(redis_url, "a")
    assert fq(redis_url, "check", "--queue", Q).code == 0
    assert_one_line_error(fq(redis_url, "check", "--queue", "nope"), "queue not found")
    user = f"probe{uuid.uuid4().hex[:6]}"
    r.acl_setuser(user, enabled=True, passwords=["+pw"], commands=["+@connection", "+ping", "-@scripting"],
                  keys=["*"])
    try:
        url = redis_url.replace("redis://", f"redis://{user}:pw@")
        import redis as redis_py

        assert redis_py.Redis.from_url(url).ping()  # PING works for this user...
        res = fq(url, "check")  # ...but scripts do not, so the probe fails
        assert_one_line_error(res, "Redis")
        assert "pw@" not in res.err
    finally:
        r.acl_deluser(user)


def test_check_fails_fast_on_a_dead_redis():
    url = f"redis://:S3CRET@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    res = fq(url, "check", "--timeout", "1")
    assert_one_line_error(res, "cannot reach Redis at redis://:***@127.0.0.1", code=1)
    assert "S3CRET" not in res.err + res.out and time.monotonic() - started < 10


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("args, fragments", [
    (["task", "ls", "-q", "nope", "-s", "pending"], ["queue not found: 'nope'"]),
    (["task", "inspect", "-q", Q, "-i", "missing"], ["task not found: id 'missing'"]),
    (["task", "delete", "-q", Q, "-i", "missing"], ["task not found"]),
    (["task", "archive", "-q", Q, "-i", "missing"], ["task not found"]),
    (["task", "run", "-q", "nope", "-i", "a"], ["queue not found"]),
    (["task", "ls", "-q", Q, "-s", "running"], ["'--state'", "'running' is not one of"]),
    (["task", "ls", "-q", Q, "-s", "pending", "--page", "0"], ["'--page'", "0"]),
    (["task", "ls", "-q", Q, "-s", "pending", "--page", "-3"], ["'--page'"]),
    (["task", "ls", "-q", Q, "-s", "pending", "--page", "two"], ["'--page'", "'two' is not a valid integer"]),
    (["task", "ls", "-q", Q, "-s", "pending", "--size", "0"], ["'--size'"]),
    (["task", "ls", "-q", Q, "-s", "pending", "--size", "100001"], ["'--size'"]),
    (["task", "ls", "-q", Q, "-s", "aggregating"], ["group is required"]),
    (["task", "ls", "-s", "pending"], ["Missing option '--queue'"]),
    (["task", "delete", "-q", Q], ["give --id ID, or --all with --state"]),
    (["task", "delete", "-q", Q, "-i", "a", "--all", "-s", "pending"], ["either --id or --all"]),
    (["task", "delete", "-q", Q, "--all"], ["--all needs --state"]),
    (["task", "run", "-q", Q, "--all", "-s", "pending"], ["'--state'", "'pending' is not one of"]),
    (["task", "archive", "-q", Q, "--all", "-s", "completed"], ["'completed' is not one of"]),
    (["task", "delete", "-q", Q, "-i", "a", "-s", "pending"], ["--state and --group go with --all only"]),
    (["task", "cancel"], ["Missing argument"]),
    (["queue", "inspect", "nope"], ["queue not found"]),
    (["queue", "history", Q, "--days", "0"], ["'--days'"]),
    (["queue", "unpause", Q], ["is not paused"]),
    (["queue", "rm", "nope"], ["queue not found"]),
    (["group", "ls", "-q", "nope"], ["queue not found"]),
    (["cron", "history", " "], ["entry ID must not be empty"]),
    (["enqueue", "t", "p", "--timeout", "abc"], ["'--timeout'", "not a duration"]),
    (["enqueue", "t", "p", "--timeout", "0.5"], ["'timeout'", "at least 1 second"]),
    (["enqueue", "t", "p", "--process-in", "-5s"], ["'--process-in'"]),
    (["enqueue", "t", "p", "--deadline", "2030-01-01T00:00:00"], ["'--deadline'", "no timezone"]),
    (["enqueue", "t", "p", "--process-at", "tomorrow"], ["'--process-at'", "RFC 3339"]),
    (["enqueue", "t", "p", "--max-retry", "-1"], ["'--max-retry'"]),
    (["enqueue", " ", "p"], ["task type must not be empty"]),
    (["enqueue", "t", "p", "--queue", " "], ["'queue' must not be empty"]),
    (["enqueue", "t", "p", "--task-id", "a"], ["conflicts"]),
    (["nosuchcommand"], ["No such command"]),
])
def test_bad_input_is_one_line_and_changes_nothing(r, redis_url, args, fragments):
    enqueue(redis_url, "a")
    before = dump(r)
    res = fq(redis_url, *args)
    assert_one_line_error(res, *fragments)
    assert dump(r) == before


@pytest.mark.parametrize("url, fragment", [
    ("http://127.0.0.1:6379/0", "scheme must be"),
    ("redis://:S3CRET@127.0.0.1:notaport/0", "Port could not be cast"),
    ("redis://:S3CRET@127.0.0.1:6379/abc", "database must be a number"),
    ("redis://:S3CRET@[::1/0", "invalid Redis URL"),
    ("redis:///0", "no host"),
])
def test_bad_redis_url(url, fragment):
    res = fq(url, "stats")
    assert_one_line_error(res, fragment, code=2)
    assert "S3CRET" not in res.err + res.out


def test_redis_url_from_env_and_password_never_printed(r, redis_url):
    enqueue(redis_url, "a")
    assert fq(None, "queue", "ls", env={"FASTQ_REDIS_URL": redis_url}).out.split() == [Q]
    dead = f"redis://user:S3CRET@127.0.0.1:{free_port()}/0"
    res = fq(None, "stats", env={"FASTQ_REDIS_URL": dead})
    assert_one_line_error(res, "cannot reach Redis at redis://user:***@127.0.0.1")
    assert "S3CRET" not in res.err + res.out


def test_parse_duration():
    assert parse_duration("90") == 90 and parse_duration("1.5") == 1.5
    assert parse_duration("1m30s") == 90 and parse_duration("2h") == 7200 and parse_duration("500ms") == 0.5
    assert parse_duration("1h0m0s") == 3600
    for bad in ("", "1x", "m", "1m30", "-1s", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# ---------------------------------------------------------------- the installed console script

def test_console_script_in_a_subprocess(r, redis_url):
    script = Path(sys.executable).with_name("fastq")
    assert script.exists(), "install fastq (pip install -e .) so the console script exists"
    enqueue(redis_url, "a")
    env = {**os.environ, "FASTQ_REDIS_URL": redis_url}
    out = subprocess.run([str(script), "task", "ls", "-q", Q, "-s", "pending", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [t["id"] for t in json.loads(out.stdout)] == ["a"]
    out = subprocess.run([str(script), "task", "inspect", "-q", Q, "-i", "zzz"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip() == "Error: task not found: id 'zzz' in queue 'default'"
    out = subprocess.run([str(script), "check"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("OK")


def test_enqueue_options(r, redis_url):
    res = fq(redis_url, "enqueue", "sum", "1", "--unique", "1h", "--json")
    assert res.code == 0 and r.get(keys.unique_key(Q, "sum", b"1")) == res.json()["id"].encode()
    before = dump(r)
    assert_one_line_error(fq(redis_url, "enqueue", "sum", "1", "--unique", "1h"), "task already exists")
    assert dump(r) == before
    res = fq(redis_url, "enqueue", "item", "x", "--group", "batch", "--json")
    assert res.json()["state"] == "aggregating" and r.sismember(keys.groups_key(Q), "batch")
    res = fq(redis_url, "enqueue", "later", "x", "--process-at", "2030-01-02T03:04:05Z", "--deadline",
             "2030-01-02T05:04:05+02:00", "--json")
    data = res.json()
    assert data["next_process_at"] == "2030-01-02T03:04:05+00:00" and data["deadline"] == "2030-01-02T03:04:05+00:00"
    assert r.zscore(keys.scheduled_key(Q), data["id"]) == 1893553445


# ---------------------------------------------------------------- issue 17: CLI polish and first run

def walk(command, path=("fastq",)):
    """Every click command under ``command`` once (aliases skipped), with its command path."""
    import click

    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if name == sub.name:
                yield from walk(sub, path + (name,))


def test_redis_url_after_the_subcommand(r, redis_url):
    enqueue(redis_url, "a")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    res = fq(None, "task", "ls", "-q", Q, "-s", "pending", "-u", redis_url, "--json")
    assert res.code == 0 and [t["id"] for t in res.json()] == ["a"]
    res = fq(dead, "queue", "ls", "--redis-url", redis_url)  # the one after the subcommand wins
    assert res.code == 0 and res.out.split() == [Q]
    res = fq(None, "stats", "--json", "-u", redis_url, env={"FASTQ_REDIS_URL": dead})  # ...and over the env
    assert res.code == 0 and res.json()["aggregate"]["pending"] == 1
    res = fq(redis_url, "check", "-u", dead, "--timeout", "1")
    assert_one_line_error(res, f"cannot reach Redis at {dead}", code=1)
    assert_one_line_error(fq(None, "task", "inspect", "-q", Q, "-i", "a", "-u", "http://x/0"), "scheme must be",
                          code=2)


def test_version_on_every_command(capsys):
    from fastq import __version__
    from fastq.cli import cli

    for path, _command in walk(cli):
        res = fq(None, *path[1:], "--version")  # before required options or arguments are missing
        assert res.code == 0 and res.out.startswith(f"fastq {__version__} (Python "), (path, res.out, res.err)
    from fastq.cli import demo
    from fastq.cli import scheduler as scheduler_cli
    from fastq.cli import supervisor as supervisor_cli

    for prog, entry in (("fastq-supervisor", supervisor_cli.main), ("fastq-scheduler", scheduler_cli.main),
                        ("fastq-demo", demo.main)):
        with pytest.raises(SystemExit) as exc:
            entry(["--version"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.startswith(f"{prog} {__version__} (Python "), prog
    with pytest.raises(SystemExit) as exc:  # a bad setting does not stop --version
        supervisor_cli.main(["--version", "--config", "/nonexistent.toml"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("fastq-supervisor ")


def run_in_terminal(argv: list[str], env: dict, columns: int = 60) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal ``columns`` wide; return its code and output."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(60)
    os.close(master)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_task_ids_are_never_cut_on_a_narrow_terminal(r, redis_url):
    ids = [f"{uuid.uuid4()}-{n}" for n in range(3)]  # 38 characters
    with fastq.Client(redis_url) as client:
        for tid in ids:
            client.enqueue(fastq.Task("report:generate:monthly", b"x" * 80), task_id=tid)
    env = {**os.environ, "FASTQ_REDIS_URL": redis_url, "COLUMNS": "60"}
    for args in (["-s", "pending"], []):
        code, out = run_in_terminal([sys.executable, "-m", "fastq.cli", "task", "ls", "-q", Q, *args], env)
        assert code == 0, out
        lines = out.splitlines()
        for tid in ids:
            assert any(tid in line for line in lines), (tid, out)
        assert max(len(line) for line in lines) <= 60, out  # the other columns gave way
    res = fq(redis_url, "task", "ls", "-q", Q, "-s", "pending", env={"COLUMNS": "60"})  # $COLUMNS in a pipe too
    assert all(tid in res.out for tid in ids) and max(len(line) for line in res.out.splitlines()) <= 60, res.out


def test_task_ls_without_state_lists_every_state(r, redis_url):
    enqueue(redis_url, "p1", "p2")
    enqueue(redis_url, "s1", process_in=3600)
    seed_golden(r, "aggregating")  # two tasks in group g1
    res = fq(redis_url, "task", "ls", "-q", Q, "--json")
    assert res.code == 0, res.err
    states = {t["id"]: t["state"] for t in res.json()}
    assert [states[i] for i in ("p1", "p2", "s1")] == ["pending", "pending", "scheduled"]
    assert sorted(states.values()).count("aggregating") == 2
    res = fq(redis_url, "task", "ls", "-q", Q)
    assert res.code == 0 and "State" in res.out and "group g1" in res.out and "(in 59m" in res.out
    assert len(fq(redis_url, "task", "ls", "-q", Q, "--size", "1", "--json").json()) == 3  # one of each state
    r.flushdb()
    enqueue(redis_url, "only")
    fq(redis_url, "task", "delete", "-q", Q, "-i", "only")
    assert "No tasks in queue 'default'" in fq(redis_url, "task", "ls", "-q", Q).out


def test_every_option_has_help():
    from fastq.cli import cli, demo
    from fastq.cli import scheduler as scheduler_cli
    from fastq.cli import supervisor as supervisor_cli

    missing = []
    scripts = [walk(m.command, (m.PROG,)) for m in (supervisor_cli, scheduler_cli, demo)]
    for path, command in [*walk(cli), *(found for script in scripts for found in script)]:
        for param in command.params:
            if param.param_type_name == "option" and not getattr(param, "hidden", False):
                if not (param.help or "").strip():
                    missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert missing == []


def test_aliases_are_shown_as_aliases(r, redis_url):
    res = fq(None, "task", "--help")
    assert "delete (alias: rm)" in res.out and "ls (alias: list)" in res.out
    assert not any(line.split()[:1] in (["rm"], ["list"]) for line in res.out.splitlines()), res.out
    assert "unpause (alias: resume)" in fq(None, "queue", "--help").out
    enqueue(redis_url, "a")
    assert fq(redis_url, "task", "list", "-q", Q, "--json").json()[0]["id"] == "a"  # an alias still runs
    assert fq(redis_url, "queue", "list").out.split() == [Q]


def test_empty_redis_url_env_counts_as_unset(capsys):
    from fastq.cli import scheduler as scheduler_cli
    from fastq.cli import supervisor as supervisor_cli
    from fastq.redis.facade import DEFAULT_URL, default_url

    for empty in ("", "  "):
        env = {"FASTQ_REDIS_URL": empty}
        assert fq(None, "queue", "ls", "--json", env=env).code in (0, 1)  # never a usage error (2)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FASTQ_REDIS_URL", empty)
            assert default_url() == DEFAULT_URL
            for entry in (supervisor_cli.main, scheduler_cli.main):
                with pytest.raises(SystemExit) as exc:
                    entry(["--print-config"])
                assert exc.value.code == 0
                assert f'redis_url = "{DEFAULT_URL}"' in capsys.readouterr().out
        # fastq on a terminal names the Redis it used (or could not reach): the default one
        code, out = run_in_terminal([sys.executable, "-m", "fastq.cli", "check", "--timeout", "1"],
                                    {**os.environ, **env}, columns=200)
        assert DEFAULT_URL in out and "Invalid value" not in out and "Traceback" not in out, out


def test_human_output_names_the_redis_it_used(r, redis_url):
    enqueue(redis_url, "a")
    cli = [sys.executable, "-m", "fastq.cli"]
    env = {k: v for k, v in os.environ.items() if k != "FASTQ_REDIS_URL"}
    code, out = run_in_terminal([*cli, "-u", redis_url, "queue", "ls"], env, columns=120)
    assert code == 0 and out.splitlines() == [f"Redis: {redis_url}", Q], out
    code, out = run_in_terminal([*cli, "task", "ls", "-q", Q, "-u", redis_url, "--json"], env, columns=120)
    assert code == 0 and json.loads(out)[0]["id"] == "a"  # no Redis line in JSON
    code, out = run_in_terminal([*cli, "-u", redis_url, "task", "inspect", "-q", Q, "-i", "nope"], env)
    assert code == 1 and out.splitlines() == ["Error: task not found: id 'nope' in queue 'default'"], out
    res = fq(redis_url, "queue", "ls")  # not a terminal: stdout and stderr as before
    assert res.out.split() == [Q] and res.err == ""
    user = f"u{uuid.uuid4().hex[:6]}"
    r.acl_setuser(user, enabled=True, passwords=["+S3CRET"], commands=["+@all"], keys=["*"], channels=["*"])
    try:
        code, out = run_in_terminal([*cli, "stats"],
                                    {**env, "FASTQ_REDIS_URL": redis_url.replace("redis://", f"redis://{user}:S3CRET@")},
                                    columns=120)
        masked = redis_url.replace("redis://", f"redis://{user}:***@")
        assert code == 0 and out.splitlines()[0] == f"Redis: {masked}", out
        assert "S3CRET" not in out
    finally:
        r.acl_deluser(user)


@pytest.mark.parametrize("script", ["supervisor", "scheduler", "demo"])
def test_console_scripts_start_without_heavy_modules(script):
    """`fastq-supervisor --help` (and the other two) import neither the fastq command's modules, the
    Inspector, the dashboard, rich, the supervisor's processes nor the scheduler."""
    heavy = ("fastq.cli._base", "fastq.cli._task", "fastq.inspect", "fastq.dashboard", "rich",
             "fastq.server.supervisor", "fastq.scheduler", "croniter", "prometheus_client", "starlette")
    code = (f"import sys\nfrom fastq.cli.{script} import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m in {heavy!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage: fastq-" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_chord_inspect_shows_members_done_and_state(redis_url):
    from helpers import chord_app

    app, part, join = chord_app(redis_url)
    try:
        ref = fastq.chord(fastq.group(part.s(i) for i in range(4)), join.s()).enqueue()
        res = fq(redis_url, "chord", "inspect", "-q", Q, "-i", ref.id)
        assert res.code == 0 and "Members:   0/4 done" in res.out and "State:     waiting" in res.out, res.err
        res = fq(redis_url, "chord", "inspect", "-q", Q, "-i", ref.id, "--json")
        assert res.json() == {"id": ref.id, "queue": Q, "total": 4, "done": 0, "state": "waiting",
                              "failed_member": None, "error": None}
        assert_one_line_error(fq(redis_url, "chord", "inspect", "-q", Q, "-i", "nope"), "not found")
        assert fq(redis_url, "chord", "inspect", "-q", Q).code == 2  # --id is required
    finally:
        app.close()
