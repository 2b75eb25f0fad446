"""deploy/app/tasks.py: the handlers the deploy/ files run (APP ``tasks:mux``, scheduler ``tasks:scheduler``).

A stand-in for your own module: replace this file (or build ``FROM`` the image and copy yours to /app).
``scheduler`` enqueues ``report:heartbeat`` every minute, so a fresh deployment shows work.
"""
from __future__ import annotations

import logging
import time

import fastq

log = logging.getLogger(__name__)
mux = fastq.ServeMux()


@mux.handle("email:")
async def send_email(task: fastq.Task) -> None:  # I/O-bound: async, many at once per process
    log.info("sending %s to %s", task.type, task.payload.decode(errors="replace"))


@mux.handle("report:")
def build_report(task: fastq.Task) -> bytes:  # plain def: runs in the worker's thread pool
    return f"{task.type} built at {time.time():.0f}".encode()


scheduler = fastq.Scheduler()  # $FASTQ_REDIS_URL
scheduler.register("* * * * *", fastq.Task("report:heartbeat", b""), queue="low")
