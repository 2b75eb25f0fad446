"""Smoke test of bench/compare.py: ``--quick --only fastq`` end to end, then the JSON's fields.

Not under tests/, so the main suite does not run it:  .venv/bin/pytest bench/test_compare_smoke.py
No timing is asserted; only that every figure is there and sane in kind.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastq.devserver import find_redis_server

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(find_redis_server() is None, reason="needs redis-server")


def test_quick_fastq_run_writes_expected_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--quick", "--only", "fastq", "--no-chart",
         "--out-dir", str(tmp_path), "--name", "smoke", "--tasks", "300", "--samples", "10"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "queue" in proc.stdout and "fastq" in proc.stdout  # the table was printed
    doc = json.loads((tmp_path / "smoke.json").read_text())

    for key in ("date", "tasks", "machine", "peers", "ping_rps_at_start", "latency_samples"):
        assert key in doc, key
    assert doc["tasks"] == 300
    for key in ("nproc", "python", "redis_server"):
        assert doc["machine"][key], key
    assert list(doc["peers"]) == ["fastq"]

    fq = doc["peers"]["fastq"]
    assert "error" not in fq, fq.get("traceback")
    assert fq["config"] and fq["worker_commands"] and fq["completion_detection"]
    assert fq["enqueue"]["tasks"] == 300 and fq["enqueue"]["per_s"] > 0 and "enqueue_many" in fq["enqueue"]["method"]
    assert fq["drain"]["tasks"] == 300 and fq["drain"]["steady_per_s"] > 0 and fq["drain"]["wall_per_s"] > 0
    lat = fq["latency"]
    assert lat["samples"] == 10 and lat["received"] == 10
    assert lat["p50_ms"] <= lat["p99_ms"] and len(lat["raw_ms"]) == 10
    mem = fq["memory"]
    assert mem["processes"] == 3  # the supervisor and its 2 workers
    assert mem["rss_mb_total"] > 0 and len(mem["per_process"]) == 3
    idle = fq["idle_commands"]
    assert idle["per_s"] >= 0 and idle["requests_per_s"] >= 0 and isinstance(idle["by_command_per_s"], dict)
    assert fq["ping_rps"] is None or fq["ping_rps"] > 0
