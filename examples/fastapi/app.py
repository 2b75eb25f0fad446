"""A FastAPI service that hands work to fastq workers.

Run it with ``uvicorn app:api`` and the workers with ``fastq-supervisor tasks:app`` (see README.md).
"""
from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import tasks
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

import fastq


@asynccontextmanager
async def lifespan(api: FastAPI):
    yield
    await tasks.app.aclose()  # the App's Redis connections of this event loop


api = FastAPI(title="fastq example", lifespan=lifespan)


class Mail(BaseModel):
    to: str = Field(min_length=3)
    subject: str


class Text(BaseModel):
    text: str


@api.post("/mails", status_code=202)
async def queue_mail(mail: Mail) -> dict[str, str]:
    """Enqueue and answer at once: the client gets the task ID, a worker sends the mail later."""
    ref = await tasks.send_mail.aenqueue(mail.to, subject=mail.subject)
    return {"task_id": ref.id, "queue": ref.queue}


@api.post("/stats", response_model=None)
async def stats(body: Text, wait: float = Query(5.0, gt=0, le=30),
                delay: float = Query(0.0, ge=0, le=60)) -> dict[str, Any] | JSONResponse:
    """Enqueue, then wait up to ``wait`` seconds for a worker's result."""
    ref = await tasks.text_stats.aenqueue(body.text, delay=delay)
    try:
        result = await ref.aresult(timeout=wait)
    except TimeoutError:
        # the task stays queued and still runs: the client can come back for it with the ID
        return JSONResponse({"detail": f"no result within {wait}s", "task_id": ref.id}, status_code=504)
    except fastq.TaskFailedError as exc:
        return JSONResponse({"detail": "the task failed", "task_id": exc.task_id, "error": exc.error},
                            status_code=500)
    return {"task_id": ref.id, **asdict(result)}


@api.get("/stats/{task_id}", response_model=None)
async def stats_result(task_id: str) -> dict[str, Any] | JSONResponse:
    """The result of a ``/stats`` task by its ID, e.g. after a 504: 200 when done, 202 while it waits or runs."""
    inspector = fastq.AsyncInspector(tasks.app.async_client().redis)  # the App's connections
    try:
        info = await inspector.get_task_info(tasks.text_stats.queue, task_id)
    except fastq.TaskNotFoundError:
        return JSONResponse({"detail": "no such task (or its result has expired)", "task_id": task_id},
                            status_code=404)
    if info.state is fastq.TaskState.COMPLETED and info.result is not None:
        return {"task_id": task_id, **json.loads(info.result)}
    if info.state is fastq.TaskState.ARCHIVED:
        return JSONResponse({"detail": "the task failed", "task_id": task_id, "error": info.last_err},
                            status_code=500)
    return JSONResponse({"detail": f"the task is {info.state.value}", "task_id": task_id}, status_code=202)
