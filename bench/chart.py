"""Render a results JSON of bench/compare.py as a PNG bar chart (needs matplotlib).

    python bench/chart.py bench/results/2026-01-01.json bench/results/2026-01-01.png

bench/compare.py runs this with the matplotlib of a throwaway venv (matplotlib is not a fastq
dependency). A ``-scaling`` JSON (``--scaling``) gets one panel per factor instead.
"""
from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FASTQ_COLOR = "#d6452b"
PEER_COLOR = "#5b7fa6"


def _bars(ax, names, values, title, fmt="{:,.0f}", log=False, colors=None):
    colors = colors or [FASTQ_COLOR if n == "fastq" else PEER_COLOR for n in names]
    ys = range(len(names))
    vals = [v if v is not None else 0 for v in values]
    ax.barh(ys, vals, color=colors)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    if log and any(v > 0 for v in vals):
        ax.set_xscale("log")
    top = max(vals) if vals else 1
    for y, v in zip(ys, values, strict=False):
        ax.text(v if v else 0, y, " " + (fmt.format(v) if v is not None else "n/a"), va="center", fontsize=8)
    ax.set_xlim(right=(top * (8 if log else 1.35)) or 1)
    ax.tick_params(labelsize=8)


def compare_chart(doc: dict, out: str) -> None:
    peers = {k: v for k, v in doc["peers"].items() if "error" not in v}
    failed = [k for k, v in doc["peers"].items() if "error" in v]
    names = [f"{k}" for k in peers]
    get = lambda f: [f(v) for v in peers.values()]  # noqa: E731
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    _bars(axes[0][0], names, get(lambda v: v["enqueue"]["per_s"]), "enqueue tasks/s (1 process; log scale)", log=True)
    _bars(axes[0][1], names, get(lambda v: v["drain"]["steady_per_s"]), "drain tasks/s, 2 cores (log scale)", log=True)
    _bars(axes[0][2], names, get(lambda v: v.get("drain", {}).get("worker_cpu_us_per_task")),
          "worker CPU µs per task during drain (log)", log=True)
    lat = get(lambda v: v.get("latency", {}))
    ax = axes[1][0]
    ys = range(len(names))
    ax.barh([y - 0.2 for y in ys], [x.get("p50_ms") or 0 for x in lat], height=0.4, label="p50",
            color=[FASTQ_COLOR if n == "fastq" else PEER_COLOR for n in names])
    ax.barh([y + 0.2 for y in ys], [x.get("p99_ms") or 0 for x in lat], height=0.4, label="p99", color="#bbbbbb")
    for y, x in zip(ys, lat, strict=False):
        ax.text(x.get("p99_ms") or 0, y, f" {x.get('p50_ms', 0):.1f} / {x.get('p99_ms', 0):.1f}", va="center",
                fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlim(right=max([x.get("p99_ms") or 0 for x in lat] + [1]) * 1.4)
    ax.set_title("idle pickup latency ms (p50 colour / p99 grey)", fontsize=10)
    ax.tick_params(labelsize=8)
    ax = axes[1][1]
    _bars(ax, names, get(lambda v: v.get("memory", {}).get("rss_mb_total")),
          "worker RSS MB, sum over processes (USS sum, procs)", fmt="{:.0f}")
    for t, v in zip(ax.texts, peers.values(), strict=False):
        mem = v.get("memory", {})
        t.set_text(f" {mem.get('rss_mb_total', 0):.0f} ({mem.get('uss_mb_total', 0):.0f}, {mem.get('processes', 0)})")
    _bars(axes[1][2], names, get(lambda v: v.get("idle_commands", {}).get("requests_per_s")),
          "idle Redis requests/s (top-level, MONITOR)", fmt="{:.1f}")
    m = doc.get("machine", {})
    ping = doc.get("ping_rps_at_start")
    title = (f"{doc.get('tasks', 0):,} no-op tasks per queue - {m.get('nproc')} cores, Python {m.get('python')}, "
             f"Redis {m.get('redis_server')} - single-connection PING {ping or 0:,.0f}/s - {doc.get('date', '')}")
    if failed:
        title += f"\nfailed: {', '.join(failed)}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def scaling_chart(doc: dict, out: str) -> None:
    groups: dict = {}
    for run in doc["runs"]:
        groups.setdefault(run["factor"], []).append(run)
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.8))
    if len(groups) == 1:
        axes = [axes]
    for ax, (factor, runs) in zip(axes, groups.items(), strict=False):
        labels = [r["label"] for r in runs]
        vals = [r.get("drain", {}).get("steady_per_s") for r in runs]
        _bars(ax, labels, vals, f"drain tasks/s vs {factor}", colors=[FASTQ_COLOR] * len(labels))
    m = doc.get("machine", {})
    fig.suptitle(f"fastq scaling - {m.get('nproc')} cores, Redis {m.get('redis_server')} - PING "
                 f"{doc.get('ping_rps_at_start') or 0:,.0f}/s - {doc.get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list) -> int:
    src, out = argv[1], argv[2]
    with open(src) as f:
        doc = json.load(f)
    (scaling_chart if "runs" in doc else compare_chart)(doc, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
