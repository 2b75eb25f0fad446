"""The testing guide's example (docs/guide/testing.md, examples/testing) passes, run as a user would run it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_examples_testing_passes_in_a_fresh_pytest():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("FASTQ_TEST_REDIS_URL", None)  # the plugin starts its own redis-server
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/testing", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert "fixture 'fastq_" not in output, ("the fastq pytest plugin is not registered; reinstall fastq "
                                             "(pip install -e '.[dev]') so its pytest11 entry point exists\n" + output)
    assert proc.returncode == 0, output
    assert "4 passed" in output and "skipped" not in output, output
