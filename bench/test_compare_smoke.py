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
         "--out-dir", str(tmp_path), "--name", "smoke", "--tasks", "300", "--samples", "10",
         "--foreign-samples", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "queue" in proc.stdout and "fastq" in proc.stdout  # the table was printed
    for column in ("sync / async drain/s", "foreign pickup p50/p99 ms", "+ keyspace-wakeup", "RSS / USS MB per proc"):
        assert column in proc.stdout, column
    doc = json.loads((tmp_path / "smoke.json").read_text())

    for key in ("date", "tasks", "machine", "peers", "ping_rps_at_start", "latency_samples", "foreign_pickup_samples"):
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
    assert 0 < mem["uss_mb_per_process"] <= mem["rss_mb_per_process"]
    assert all(0 < p["uss_mb"] <= p["rss_mb"] for p in mem["per_process"])
    kinds = fq["drain_by_kind"]
    assert set(kinds) == {"sync", "async"}
    for d in kinds.values():
        assert d["tasks"] == 300 and d["steady_per_s"] > 0 and "ping_rps" in d
    foreign = fq["foreign_pickup"]
    assert foreign["samples"] == 2
    for setting in ("default", "keyspace_wakeup"):
        got = foreign[setting]
        assert len(got["raw_ms"]) == 2 and 0 < got["p50_ms"] <= got["max_ms"]
    idle = fq["idle_commands"]
    assert idle["per_s"] >= 0 and idle["requests_per_s"] >= 0 and isinstance(idle["by_command_per_s"], dict)
    assert fq["ping_rps"] is None or fq["ping_rps"] > 0
