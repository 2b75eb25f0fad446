"""Handlers run by fastq-supervisor in the fault tests; each records its runs in the ledger.

The ledger is a SQLite file (FASTQ_LEDGER) that shares no fate with the Redis under test.
Payload: JSON {"sleep": seconds, "then": "ok" | "fail" | "exit" | "segv" | "leak" | "spin"}; in the async
"work" handler, {"block": seconds} calls time.sleep (blocking its worker's event loop).
"""
import asyncio
import json
import os
import signal
import time

from ledger import Ledger

import fastq

mux = fastq.ServeMux()
_ledger = None
_leak = []


def ledger() -> Ledger:
    global _ledger
    if _ledger is None or _ledger.pid != os.getpid():
        _ledger = Ledger(os.environ["FASTQ_LEDGER"])
    return _ledger


def _spec(task):
    return json.loads(task.payload or b"{}")


def _finish(spec, tid):
    then = spec.get("then", "ok")
    if then == "exit":
        os._exit(1)
    if then == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if then == "leak":
        _leak.append(bytearray(5 * 1024 * 1024))
    if then == "fail":
        raise RuntimeError("planned failure")
    ledger().record(tid, "end")


@mux.handle("work")
async def work(task):
    tid = fastq.get_task_id()
    ledger().record(tid, "start")
    spec = _spec(task)
    if spec.get("sleep"):
        await asyncio.sleep(spec["sleep"])
    if spec.get("block"):  # the beginner's mistake: a blocking call in an async handler
        time.sleep(spec["block"])
    _finish(spec, tid)


@mux.handle("sync")
def sync_work(task):
    tid = fastq.get_task_id()
    ledger().record(tid, "start")
    spec = _spec(task)
    end = time.monotonic() + spec.get("sleep", 0)
    while time.monotonic() < end:
        if spec.get("then") != "spin" and fastq.is_cancelled():
            return
        time.sleep(0.01)
    _finish(spec, tid)


# Rows W12-W13 (limits): App tasks with a fleet-wide concurrency limit and a rate limit
# (``fault_app:limited``); payload {"sleep": seconds}.
limited = fastq.App()


@limited.task(name="limited", concurrency_limit=3)
async def limited_work(sleep: float = 0.0) -> None:
    tid = fastq.get_task_id()
    ledger().record(tid, "start")
    await asyncio.sleep(sleep)
    ledger().record(tid, "end")


@limited.task(name="rated", rate_limit="20/s")
async def rated_work(sleep: float = 0.0) -> None:
    tid = fastq.get_task_id()
    ledger().record(tid, "start")
    await asyncio.sleep(sleep)
    ledger().record(tid, "end")
