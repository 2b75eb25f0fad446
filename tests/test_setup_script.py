"""scripts/setup.sh says what it is doing, run against a stand-in Python (no real venv, no pip).

The stand-in interpreter records how it was called and answers like ``python -m venv``,
``python -m pip`` (which honours ``-q``) and ``python -c``.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAKE_VENV_PYTHON = r"""#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../calls.log"
case "$1" in
  -m)
    case " $* " in *" -q "*) quiet=1 ;; *) quiet=0 ;; esac
    case " $* " in *" -e "*)
        if [ -n "${FAKE_PIP_FAIL:-}" ]; then echo "ERROR: No matching distribution found" >&2; exit 1; fi ;;
    esac
    if [ "$quiet" = 0 ]; then
        echo "Collecting redis>=5.0"
        echo "Requirement already satisfied: click>=8.2 in ./.venv/lib/python3.11/site-packages"
        echo "Building editable for fastq-tasks (pyproject.toml): finished"
        echo "Successfully installed fastq-tasks-0.1.0"
    fi ;;
  -c)
    case "$2" in *USING_SPEEDUPS*) echo "Cython (compiled)" ;; *) echo "3.11.9" ;; esac ;;
esac
"""

FAKE_PYTHON = r"""#!/bin/sh
case "$1" in
  -c) echo "3.11.9" ;;
  -m) mkdir -p .venv/bin && cp "$(dirname "$0")/venv-python" .venv/bin/python && chmod +x .venv/bin/python ;;
esac
"""


def make_tree(tmp_path: Path) -> tuple[Path, dict]:
    tree = tmp_path / "repo"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tree / "scripts" / "setup.sh")
    tools = tmp_path / "tools"
    tools.mkdir()
    for name, text in (("python", FAKE_PYTHON), ("venv-python", FAKE_VENV_PYTHON)):
        (tools / name).write_text(text)
        (tools / name).chmod((tools / name).stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHON"] = str(tools / "python")
    return tree, env


def run(tree: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(tree / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=60)


def test_setup_says_what_it_does_and_keeps_pip_quiet_in_ci(tmp_path):
    tree, env = make_tree(tmp_path)
    out = run(tree, env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("setup: creating .venv with ") and lines[0].endswith("(3.11.9)"), lines
    assert lines[1] == "setup: upgrading pip in .venv"
    assert lines[2].startswith("setup: installing fastq (editable, extras dev and embedded)")
    assert "compiles the Cython codec" in lines[2]
    assert lines[3] == "setup: checking the codec"
    assert lines[4].startswith("setup: done in ") and lines[4].endswith("codec: Cython (compiled)")
    assert len(lines) == 5 and out.stderr == ""  # pip ran with -q: nothing of its own
    calls = (tree / "calls.log").read_text().splitlines()
    assert "-m pip --disable-pip-version-check -q install -e .[dev,embedded]" in calls
    again = run(tree, env)
    assert again.returncode == 0
    assert again.stdout.splitlines()[0] == "setup: using the existing .venv (Python 3.11.9)"


def test_setup_names_the_step_that_failed(tmp_path):
    tree, env = make_tree(tmp_path)
    out = run(tree, {**env, "FAKE_PIP_FAIL": "1"})
    assert out.returncode != 0
    assert "ERROR: No matching distribution found" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("setup: failed while installing fastq")
    assert "setup: done" not in out.stdout


def test_setup_shows_pips_progress_on_a_terminal(tmp_path):
    from test_cli import run_in_terminal

    tree, env = make_tree(tmp_path)
    code, out = run_in_terminal(["bash", str(tree / "scripts" / "setup.sh")], env, columns=200)
    assert code == 0, out
    assert "Collecting redis>=5.0" in out and "Successfully installed fastq-tasks-0.1.0" in out
    assert "Requirement already satisfied" not in out  # the one line per installed package is left out
    assert "setup: done in " in out
