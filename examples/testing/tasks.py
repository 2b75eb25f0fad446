"""A tiny fastq app; test_tasks.py next to it shows how to test it.

``user:signup`` carries a typed payload; its handler enqueues a welcome email,
which records the signup task as its parent (task lineage).
"""
from __future__ import annotations

from dataclasses import dataclass

import fastq

mux = fastq.ServeMux()


@dataclass
class Signup:
    email: str
    user_id: int


SignupTask = fastq.TaskType("user:signup", Signup)


@SignupTask.handle(mux)
def signup(payload: Signup) -> str:
    if "@" not in payload.email:
        raise fastq.SkipRetry(f"cannot mail {payload.email!r}")  # archived now, never retried
    with fastq.Client() as client:  # $FASTQ_REDIS_URL
        client.enqueue(fastq.Task("email:welcome", payload.email.encode()))
    return f"user {payload.user_id} signed up in task {fastq.get_task_id()}"


@mux.handle("email:welcome")
async def welcome(task: fastq.Task) -> str:
    return f"welcome {task.payload.decode()} (because of task {fastq.get_parent_task_id()})"
