"""fastq-supervisor and fastq-scheduler settings from flags, FASTQ_* environment variables and a TOML file.

Precedence flag > environment > file > default; --print-config; every bad input
(unknown key, wrong type, bad value; file, environment and flag) is one line
naming the key, exit code 2, and nothing is started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fastq
from fastq import config_file, keys
from fastq.cli import scheduler as scheduler_cli
from fastq.cli import supervisor as cli

APP = textwrap.dedent('''
    import pathlib, fastq
    pathlib.Path("imported.marker").write_text("the app was imported")
    mux = fastq.ServeMux()

    @mux.handle("noop")
    async def noop(task):
        pass
''')


@pytest.fixture
def clean_env(monkeypatch):
    """No FASTQ_* setting from the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("FASTQ_") and name not in ("FASTQ_NO_EXTENSIONS", "FASTQ_DEBUG"):
            monkeypatch.delenv(name)
    return monkeypatch


def print_config(capsys, *argv: str, main=cli.main) -> dict[str, tuple[str, str]]:
    """Run ``fastq-supervisor ... --print-config`` in-process; {key: (TOML value, source)}."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print-config"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    rows = {}
    for line in out.splitlines()[2:]:
        text, _, source = line.rpartition("  # ")
        text = text.strip()
        if text.startswith("# "):
            rows[text.split()[1]] = ("<not set>", source)
        else:
            key, _, value = text.partition(" = ")
            rows[key] = (value, source)
    return rows


def bad(capsys, *argv: str, main=cli.main, prog: str = "fastq-supervisor") -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
    return err


def write(tmp_path, text: str, name: str = "fastq.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_precedence_flag_over_env_over_file_over_default(clean_env, tmp_path, capsys):
    conf = write(tmp_path, """
        [supervisor]
        app = "myapp:mux"
        processes = 3
        concurrency = 40
        queues = { critical = 6, default = 3 }
        shutdown_timeout = 20
    """)
    clean_env.setenv("FASTQ_CONCURRENCY", "50")
    clean_env.setenv("FASTQ_QUEUES", "env=2")
    clean_env.setenv("FASTQ_BATCH_SIZE", "70")
    rows = print_config(capsys, "--config", conf, "--queues", "flag=5", "--batch-size", "80")
    assert rows["app"] == ('"myapp:mux"', f"config file {conf}")
    assert rows["processes"] == ("3", f"config file {conf}")                  # file only
    assert rows["concurrency"] == ("50", "environment variable FASTQ_CONCURRENCY")  # env beats file
    assert rows["queues"] == ("{ flag = 5 }", "command line")                  # flag beats env and file
    assert rows["batch_size"] == ("80", "command line")                        # flag beats env
    assert rows["shutdown_timeout"] == ("20.0", f"config file {conf}")
    assert rows["lease_duration"] == ("8", "default")
    assert rows["strict_priority"] == ("false", "default")


def test_config_path_from_fastq_config_env(clean_env, tmp_path, capsys):
    conf = write(tmp_path, "[supervisor]\nprocesses = 5\nstrict_priority = true\n")
    clean_env.setenv("FASTQ_CONFIG", conf)
    rows = print_config(capsys)
    assert rows["processes"] == ("5", f"config file {conf}")
    assert rows["strict_priority"] == ("true", f"config file {conf}")


def test_print_config_masks_the_redis_password_everywhere(clean_env, tmp_path, capsys):
    conf = write(tmp_path, '[supervisor]\nredis_url = "redis://:filepass@h1:6380/1"\n')
    rows = print_config(capsys, "--config", conf)
    assert rows["redis_url"] == ('"redis://:***@h1:6380/1"', f"config file {conf}")
    clean_env.setenv("FASTQ_REDIS_URL", "redis://user:envpass@h2:6381/2")
    with pytest.raises(SystemExit):
        cli.main(["--config", conf, "--print-config"])
    out = capsys.readouterr().out
    assert "envpass" not in out and "filepass" not in out
    assert 'redis_url = "redis://user:***@h2:6381/2"' in out and "environment variable FASTQ_REDIS_URL" in out
    with pytest.raises(SystemExit):
        cli.main(["--redis-url", "rediss://:flagpass@h3:1/0", "--print-config"])
    out = capsys.readouterr().out
    assert "flagpass" not in out and "rediss://:***@h3:1/0" in out


def test_print_config_output_is_a_valid_config_file(clean_env, tmp_path, capsys):
    conf = write(tmp_path, '[supervisor]\napp = "a:b"\nqueues = "critical=6,low=1"\nmax_memory_per_child = 300\n')
    with pytest.raises(SystemExit):
        cli.main(["--config", conf, "--print-config"])
    printed = write(tmp_path, capsys.readouterr().out, "printed.toml")
    again = print_config(capsys, "--config", printed)
    assert again["queues"][0] == "{ critical = 6, low = 1 }"
    assert again["max_memory_per_child"][0] == "300.0"
    assert again["app"][0] == '"a:b"'


def test_every_supervisor_flag_is_settable_from_env_and_file(clean_env, tmp_path, capsys):
    """Each flag (also ones added later) has a FASTQ_* variable and a file key that reach the settings."""
    settings = config_file.settings_of(cli.command)
    assert {"app", "redis_url", "processes", "concurrency", "queues", "strict_priority", "shutdown_timeout",
            "batch_size", "poll_interval", "lease_duration", "log_level"} <= set(settings)

    def sample(setting):
        if setting.choices:
            return list(setting.choices)[-1]
        return {bool: True, int: 5, float: 5.5, dict: "q=2", str: "mod:attr"}[setting.kind]

    env_text = {bool: lambda v: "yes"}
    for setting in settings.values():
        value = sample(setting)
        clean_env.setenv(setting.env, env_text.get(setting.kind, str)(value))
    rows = print_config(capsys)
    for dest, setting in settings.items():
        assert rows[dest][1] == f"environment variable {setting.env}", dest
    for name in [s.env for s in settings.values()]:
        clean_env.delenv(name)

    lines = ["[supervisor]"]
    for dest, setting in settings.items():
        value = sample(setting)
        lines.append(f"{dest} = " + ("true" if value is True else repr(value).replace("'", '"')))
    conf = write(tmp_path, "\n".join(lines) + "\n")
    rows = print_config(capsys, "--config", conf)
    for dest in settings:
        assert rows[dest][1] == f"config file {conf}", dest


@pytest.mark.parametrize("toml, message", [
    ('[supervisor]\nprocesess = 2\n', "[supervisor]: unknown key 'procesess' (did you mean 'processes'?)"),
    ('[supervisor]\nredis-url = "redis://h"\n', "unknown key 'redis-url' (did you mean 'redis_url'?)"),
    ('[supervisor]\nzzz = 1\n', "unknown key 'zzz' (known keys: app, redis_url"),
    ('[worker]\nprocesses = 2\n', "unknown key 'worker' (known keys: supervisor, scheduler)"),
    ('processes = 2\n', "unknown key 'processes'"),
    ('supervisor = 3\n', "supervisor must be a table ([supervisor]), got int"),
    ('[supervisor]\nprocesses = "4"\n', "[supervisor] processes: expected an integer, got str '4'"),
    ('[supervisor]\nprocesses = 2.5\n', "[supervisor] processes: expected an integer, got float 2.5"),
    ('[supervisor]\nprocesses = true\n', "[supervisor] processes: expected an integer, got a boolean"),
    ('[supervisor]\nprocesses = 0\n', "[supervisor] processes: must be at least 1, got 0"),
    ('[supervisor]\nconcurrency = [1]\n', "[supervisor] concurrency: expected an integer, got an array"),
    ('[supervisor]\nshutdown_timeout = "8s"\n', "[supervisor] shutdown_timeout: expected a number, got str '8s'"),
    ('[supervisor]\nshutdown_timeout = -1\n', "[supervisor] shutdown_timeout: must be a finite number >= 0"),
    ('[supervisor]\npoll_interval = nan\n', "[supervisor] poll_interval: must be a finite number, got nan"),
    ('[supervisor]\nstrict_priority = "yes"\n', "[supervisor] strict_priority: expected a boolean"),
    ('[supervisor]\nstrict_priority = 1\n', "[supervisor] strict_priority: expected a boolean"),
    ('[supervisor]\nqueues = 5\n', "[supervisor] queues: expected a queue list"),
    ('[supervisor]\nqueues = { a = 0 }\n', "[supervisor] queues: queues {'a': 0}: weight of 'a' must be at least 1"),
    ('[supervisor]\nqueues = "a,,b"\n', "[supervisor] queues: queues 'a,,b': empty entry"),
    ('[supervisor]\nlog_level = "debug"\n', "[supervisor] log_level: invalid choice 'debug' (choose from 'DEBUG'"),
    ('[supervisor]\npool = "processes"\n',
     "[supervisor] pool: invalid choice 'processes' (choose from 'threads', 'inline')"),
    ('[supervisor]\napp = 42\n', "[supervisor] app: expected a string, got int 42"),
    ('[supervisor]\nprocesses = \n', "not valid TOML"),
    ('[supervisor]\n[supervisor]\n', "not valid TOML"),
])
def test_bad_config_file_is_one_error_naming_the_key(clean_env, tmp_path, capsys, toml, message):
    conf = write(tmp_path, toml)
    err = bad(capsys, "app:mux", "--config", conf)
    assert message in err, err
    assert f"config file {conf}" in err


def test_config_file_that_cannot_be_read(clean_env, tmp_path, capsys):
    assert "config file /no/such/fastq.toml: not found" in bad(capsys, "a:b", "--config", "/no/such/fastq.toml")
    assert f"config file {tmp_path}: is a directory" in bad(capsys, "a:b", "--config", str(tmp_path))
    (tmp_path / "latin1.toml").write_bytes(b'[supervisor]\napp = "caf\xe9:mux"\n')
    assert "not valid TOML" in bad(capsys, "a:b", "--config", str(tmp_path / "latin1.toml"))
    clean_env.setenv("FASTQ_CONFIG", str(tmp_path / "missing.toml"))
    assert f"config file {tmp_path / 'missing.toml'}: not found" in bad(capsys, "a:b")


@pytest.mark.parametrize("name, value, message", [
    ("FASTQ_PROCESSES", "abc", "environment variable FASTQ_PROCESSES: expected an integer, got 'abc'"),
    ("FASTQ_PROCESSES", "0", "environment variable FASTQ_PROCESSES: must be at least 1, got 0"),
    ("FASTQ_CONCURRENCY", "1.5", "environment variable FASTQ_CONCURRENCY: expected an integer"),
    ("FASTQ_QUEUES", "a=x", "environment variable FASTQ_QUEUES: queues 'a=x': weight of 'a' must be an integer"),
    ("FASTQ_STRICT_PRIORITY", "maybe", "environment variable FASTQ_STRICT_PRIORITY: expected a boolean"),
    ("FASTQ_SHUTDOWN_TIMEOUT", "inf", "environment variable FASTQ_SHUTDOWN_TIMEOUT: must be a finite number"),
    ("FASTQ_LOG_LEVEL", "LOUD", "environment variable FASTQ_LOG_LEVEL: invalid choice 'LOUD'"),
    ("FASTQ_POOL", "fibers",
     "environment variable FASTQ_POOL: invalid choice 'fibers' (choose from 'threads', 'inline')"),
    ("FASTQ_LEASE_DURATION", "2", "environment variable FASTQ_LEASE_DURATION: must be at least 3, got 2"),
])
def test_bad_environment_variable_is_one_error_naming_it(clean_env, capsys, name, value, message):
    clean_env.setenv(name, value)
    assert message in bad(capsys, "app:mux")


def test_bad_env_is_reported_even_when_the_flag_overrides_it(clean_env, capsys):
    """A broken variable is an error, not silently shadowed: it would bite the next run without the flag."""
    clean_env.setenv("FASTQ_PROCESSES", "many")
    assert "FASTQ_PROCESSES" in bad(capsys, "app:mux", "--processes", "2")


def test_empty_environment_variable_counts_as_unset(clean_env, capsys):
    clean_env.setenv("FASTQ_PROCESSES", "")
    rows = print_config(capsys)
    assert rows["processes"][1] == "default"


def test_app_is_required_from_somewhere(clean_env, capsys, tmp_path):
    err = bad(capsys)
    assert "APP is required: give it on the command line, in FASTQ_APP or as app in the [supervisor] table" in err
    clean_env.setenv("FASTQ_APP", "from_env:mux")
    assert print_config(capsys)["app"] == ('"from_env:mux"', "environment variable FASTQ_APP")


@pytest.mark.slow
def test_bad_config_starts_nothing(clean_env, tmp_path, redis_url, r):
    """The console script in a subprocess: exit 2, one line, the app never imported, no server registered."""
    (tmp_path / "cfg_app.py").write_text(APP)
    conf = write(tmp_path, f'[supervisor]\napp = "cfg_app:mux"\nredis_url = "{redis_url}"\nconcurrency = "10"\n')
    script = os.path.join(os.path.dirname(sys.executable), "fastq-supervisor")
    out = subprocess.run([script, "--config", conf], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr == (f"fastq-supervisor: error: config file {conf}: [supervisor] concurrency: "
                          "expected an integer, got str '10'\n")
    assert not (tmp_path / "imported.marker").exists()
    assert r.zcard(keys.ALL_SERVERS) == 0


@pytest.mark.slow
def test_supervisor_runs_from_config_file_and_env(clean_env, tmp_path, redis_url, r):
    """A real run whose APP, Redis, processes and queues come from the file and the environment."""
    (tmp_path / "cfg_app.py").write_text(APP)
    conf = write(tmp_path, f"""
        [supervisor]
        app = "cfg_app:mux"
        redis_url = "{redis_url}"
        processes = 1
        concurrency = 5
        queues = {{ wrong = 1 }}
    """)
    fastq.Client(redis_url).enqueue_many([fastq.Task("noop")] * 200, queue="fromenv")
    env = dict(os.environ, FASTQ_QUEUES="fromenv=2", FASTQ_SHUTDOWN_TIMEOUT="2")
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "--config", conf], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while r.get(keys.processed_total_key("fromenv")) != b"200":
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "tasks were not processed"
            time.sleep(0.05)
        assert (tmp_path / "imported.marker").exists()
        assert r.smembers(keys.ALL_QUEUES) >= {b"fromenv"} and b"wrong" not in r.smembers(keys.ALL_QUEUES)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_switch_flags_of_every_kind_are_settings(clean_env, tmp_path, capsys):
    """--x and --x/--no-x switches read booleans from the file and the environment."""
    import click

    from fastq.cli._script import Fail, run

    seen = []

    @click.command("demo-cmd", params=config_file.config_options("demo"))
    @click.option("--fast", is_flag=True)
    @click.option("--color/--no-color", default=True)
    @click.pass_context
    def demo_cmd(ctx, **_params):
        try:
            seen.append(config_file.resolve(ctx, "demo", environ=environ))
        except config_file.ConfigError as exc:
            raise Fail(str(exc), 2) from None

    conf = write(tmp_path, "[demo]\nfast = true\ncolor = false\n")
    environ = {}
    run(demo_cmd, ["--config", conf], "demo-cmd")
    assert seen[-1]["fast"] is True and seen[-1]["color"] is False
    environ = {"FASTQ_FAST": "off"}
    run(demo_cmd, ["--config", conf, "--color"], "demo-cmd")
    assert seen[-1]["fast"] is False and seen[-1]["color"] is True
    environ = {"FASTQ_COLOR": "blue"}
    with pytest.raises(SystemExit) as info:
        run(demo_cmd, [], "demo-cmd")
    assert info.value.code == 2
    assert "demo-cmd: error: environment variable FASTQ_COLOR: expected a boolean" in capsys.readouterr().err


# ---------------------------------------------------------------- fastq-scheduler


def test_scheduler_reads_its_own_env_and_table_beside_the_supervisors(clean_env, tmp_path, capsys):
    conf = write(tmp_path, """
        [supervisor]
        app = "tasks:mux"
        processes = 4

        [scheduler]
        app = "cron:scheduler"
        heartbeat_interval = 2.5
        location = "Europe/Paris"
    """)
    clean_env.setenv("FASTQ_APP", "tasks:mux")  # the supervisor's: not read by the scheduler
    clean_env.setenv("FASTQ_SCHEDULER_LOCATION", "Asia/Tokyo")
    rows = print_config(capsys, "--config", conf, "--log-level", "DEBUG", main=scheduler_cli.main)
    assert rows["app"] == ('"cron:scheduler"', f"config file {conf}")
    assert rows["heartbeat_interval"] == ("2.5", f"config file {conf}")
    assert rows["location"] == ('"Asia/Tokyo"', "environment variable FASTQ_SCHEDULER_LOCATION")
    assert rows["log_level"] == ('"DEBUG"', "command line")
    # and the supervisor reads the same file without minding the [scheduler] table
    assert print_config(capsys, "--config", conf)["processes"] == ("4", f"config file {conf}")


@pytest.mark.parametrize("env, text, message", [
    ({}, "", "APP is required: give it on the command line, in FASTQ_SCHEDULER_APP or as app in the "
             "[scheduler] table"),
    ({"FASTQ_APP": "cron:scheduler"}, "", "APP is required"),
    ({"FASTQ_SCHEDULER_APP": "cron:s", "FASTQ_SCHEDULER_HEARTBEAT_INTERVAL": "soon"}, "",
     "environment variable FASTQ_SCHEDULER_HEARTBEAT_INTERVAL"),
    ({"FASTQ_SCHEDULER_APP": "cron:s"}, '[scheduler]\nlocation = "Mars/Olympus"\n', "unknown time zone"),
    ({"FASTQ_SCHEDULER_APP": "cron:s"}, "[scheduler]\nheartbeat = 3\n",
     "[scheduler]: unknown key 'heartbeat' (did you mean 'heartbeat_interval'?)"),
    ({"FASTQ_SCHEDULER_APP": "cron:s"}, "[schedular]\n", "unknown key 'schedular' (did you mean 'scheduler'?)"),
])
def test_scheduler_bad_settings_exit_2_naming_them(clean_env, tmp_path, capsys, env, text, message):
    for name, value in env.items():
        clean_env.setenv(name, value)
    argv = ["--config", write(tmp_path, text)] if text else []
    assert message in bad(capsys, *argv, main=scheduler_cli.main, prog="fastq-scheduler")


def test_bad_pool_flag_is_one_error_naming_the_option(clean_env, capsys):
    err = bad(capsys, "app:mux", "--pool", "processes")
    assert "--pool" in err and "'processes'" in err and "threads" in err and "inline" in err, err


def test_pool_reaches_the_worker_config_from_each_place(clean_env, capsys, tmp_path):
    assert print_config(capsys)["pool"] == ('"threads"', "default")
    conf = write(tmp_path, '[supervisor]\npool = "inline"\n')
    assert print_config(capsys, "--config", conf)["pool"][0] == '"inline"'
    clean_env.setenv("FASTQ_POOL", "inline")
    assert print_config(capsys)["pool"] == ('"inline"', "environment variable FASTQ_POOL")


@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, "threads"),
    (["--pool", "inline"], {}, "inline"),
    ([], {"FASTQ_POOL": "inline"}, "inline"),
])
def test_pool_reaches_the_workers_config(clean_env, monkeypatch, argv, env, expected):
    import fastq.server.supervisor as supervisor

    seen = []

    class Recorder:
        def __init__(self, handler, config, *args, **kwargs):
            seen.append(config)

        def run(self):
            return 0

    monkeypatch.setattr(supervisor, "Supervisor", Recorder)
    monkeypatch.setattr(cli, "_preflight", lambda url: None)
    for name, value in env.items():
        clean_env.setenv(name, value)
    try:
        code = cli.main(["fastq.demo:mux", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 0 and [c.pool for c in seen] == [expected]
