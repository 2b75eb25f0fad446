"""Typing: mypy --strict passes on the whole package, and its annotations catch misuse in user code.

The configuration ([tool.mypy] in pyproject.toml) checks every module of ``fastq`` strictly. The
package run takes up to a minute (cold cache); the user-code runs a few seconds each.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for p in (ROOT / "fastq").rglob("*.py") if "__pycache__" not in p.parts)

pytest.importorskip("mypy", reason="mypy is in the dev extra: pip install -e '.[dev]'")


def mypy(*args: str, cwd: Path = ROOT, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_config_checks_the_whole_package_strictly():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert config["packages"] == ["fastq"] and "files" not in config and "follow_imports" not in config
    assert (ROOT / "fastq" / "py.typed").exists()


def test_every_module_passes_mypy_strict(tmp_path):
    out = mypy(cache=tmp_path / "cache")
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(r"Success: no issues found in (\d+) source files", out.stdout)
    assert found is not None, out.stdout
    assert int(found.group(1)) >= len(MODULES)  # every module (mypy also counts data folders as packages)


USER_CODE = '''
    from dataclasses import dataclass
    import fastq

    @dataclass
    class Signup:
        email: str

    SignupTask = fastq.TaskType("user:signup", Signup)
    client = fastq.Client("redis://127.0.0.1:1/0")

    ok: fastq.TaskInfo = client.enqueue(SignupTask(Signup("a@example.com")), queue="low")
    infos: list[fastq.TaskInfo] = client.enqueue_many([fastq.Task("noop")] * 3)
    decoded: Signup = SignupTask.decode(b"{}")

    wrong_payload = fastq.Task("noop", "text, not bytes")            # E: str is not bytes
    wrong_schema = SignupTask("not a Signup")                          # E: the payload type is Signup
    task_id: int = fastq.get_task_id()                                 # E: task IDs are str
    ctx = fastq.current_task()
    queue: str = ctx.queue                                             # E: current_task() may be None
'''


def test_annotations_catch_misuse_in_user_code(tmp_path):
    """The package's types reach a user's module: right code passes, each marked misuse is reported."""
    user = tmp_path / "user_app.py"
    user.write_text(textwrap.dedent(USER_CODE))
    out = mypy("--strict", "--no-incremental", "--follow-imports=silent", str(user), cache=tmp_path / "cache")
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    lines = textwrap.dedent(USER_CODE).splitlines()
    expected = {i + 1 for i, line in enumerate(lines) if "# E:" in line}
    reported = {int(line.split(":")[1]) for line in errors}
    assert reported == expected, out.stdout
    assert out.returncode == 1
