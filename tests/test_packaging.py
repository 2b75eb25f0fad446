"""Packaging: the FASTQ_NO_EXTENSIONS build switch and import hygiene."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_no_extensions_build_is_a_pure_wheel(tmp_path):
    env = dict(os.environ, FASTQ_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    wheels = list(tmp_path.glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].name.endswith("-py3-none-any.whl"), wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))]
    for needed in ("fastq/_speedups_py.py", "fastq/lua/dequeue.lua", "fastq/lua/_lib.lua", "fastq/py.typed"):
        assert needed in names


@pytest.mark.parametrize("module", ["fastq", "fastq.client", "fastq.server.worker", "fastq.server.supervisor",
                                    "fastq.server.cli", "fastq.demo", "fastq.logging", "fastq._proto"])
def test_each_module_imports_alone(module):
    """No circular imports: every module imports in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_public_api():
    import fastq

    for name in ("Client", "AsyncClient", "Task", "TaskInfo", "ServeMux", "get_task_id", "get_retry_count",
                 "get_max_retry", "get_queue_name", "SkipRetry", "TaskIDConflictError", "DecodeError"):
        assert name in fastq.__all__ and hasattr(fastq, name)
