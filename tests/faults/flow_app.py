"""An App run by fastq-supervisor in the workflow fault rows (C1, C2): each task records its
runs in the ledger (FASTQ_LEDGER); the step or member named by FASTQ_VICTIM SIGKILLs its own
worker the first time it runs (a marker file next to the ledger says it did)."""
import os
import signal
from pathlib import Path

from ledger import Ledger

import fastq

app = fastq.App()
_ledger = None


def ledger() -> Ledger:
    global _ledger
    if _ledger is None or _ledger.pid != os.getpid():
        _ledger = Ledger(os.environ["FASTQ_LEDGER"])
    return _ledger


def _maybe_die(name: str) -> None:
    marker = Path(os.environ["FASTQ_LEDGER"] + ".killed")
    if name == os.environ.get("FASTQ_VICTIM") and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


@app.task
def step(x: int, name: str) -> int:
    tid = fastq.get_task_id()
    ledger().record(tid, "start")
    _maybe_die(name)
    ledger().record(tid, "end")
    return x + 1


@app.task
def member(i: int) -> int:
    tid = fastq.get_task_id()
    ledger().record(tid, "start")
    _maybe_die(f"member-{i}")
    ledger().record(tid, "end")
    return i


@app.task
def collect(xs: list[int]) -> list[int]:
    tid = fastq.get_task_id()
    ledger().record(tid, "start")
    ledger().record(tid, "end")
    return [len(xs), sum(xs), int(xs == sorted(xs))]


@app.task(max_retry=1)
def crasher(i: int) -> int:
    ledger().record(fastq.get_task_id(), "start")
    os.kill(os.getpid(), signal.SIGKILL)
    return i


@app.task
def alert(task_id: str) -> None:
    ledger().record(task_id, "alert")
