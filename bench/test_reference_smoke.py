"""Smoke tests of bench/reference.py and bench/redis_cost.py: tiny runs end to end, figures present.

Not under tests/, so the main suite does not run them:  .venv/bin/pytest bench/test_reference_smoke.py
No timing is asserted; only that every figure is there and sane in kind.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastq.devserver import find_redis_server

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(find_redis_server() is None, reason="needs redis-server")


def test_reference_loops_and_fastq_drain_the_same_tasks(tmp_path):
    out = tmp_path / "ref.json"
    proc = subprocess.run([sys.executable, "-m", "bench.reference", "--tasks", "3000", "--rounds", "1",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "where Redis spends its time" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["ref", "ref-fastq-ack", "fastq"]
    for row in rows:
        assert row["tasks"] == 3000 and 0 < row["steady_tasks"] <= 3000
        assert row["per_s"] > 0 and row["redis_cpu_us"] >= 0 and row["worker_cpu_us"] >= 0 and row["ping_rps"] > 0
        assert "evalsha" in row["commands"]


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
                    reason="needs valgrind")
def test_redis_cost_counts_instructions_per_task():
    proc = subprocess.run([sys.executable, "-m", "bench.redis_cost", "--tasks", "500", "--resident", "10",
                           "--variants", "dequeue,plain,fastq"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    totals = proc.stdout.split("ack alone")[0]  # the per-variant lines, before the differences
    counts = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in totals.splitlines()
              if line.split() and line.split()[0] in ("dequeue", "plain", "fastq") and "Ir/task" in line}
    assert set(counts) == {"dequeue", "plain", "fastq"}
    assert 0 < counts["dequeue"] < counts["plain"] and counts["dequeue"] < counts["fastq"]


def test_memory_reports_workers_beside_the_floor():
    proc = subprocess.run([sys.executable, "-m", "bench.memory", "--tasks", "2000", "--processes", "2",
                           "--settle", "0.2", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = json.loads(proc.stdout)["runs"]
    for when in ("idle", "drained", "floor"):
        snap = run[when]
        assert len(snap["workers"]) == 2
        for m in [snap["supervisor"], *snap["workers"]]:
            assert 0 < m["uss_mb"] <= m["pss_mb"] <= m["rss_mb"]
