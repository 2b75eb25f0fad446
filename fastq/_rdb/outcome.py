"""What the worker reads from Redis (``Claim``) and what it writes back (the outcomes).

A dequeue hands out ``Claim``s: raw bytes, as Redis holds them, for the processor to decode.
Each claim ends as one outcome, written by ``fastq._rdb.worker.settle`` with the claim's lease
token (``""``: no token check, as for recoverers that settle tasks whose lease expired):

* ``Done``: the task succeeded and is deleted (its unique lock released when it still holds it);
* ``Complete``: the task succeeded and is kept until ``expiry`` (retention), with its result;
* ``Retry``: the task failed and runs again at ``retry_at`` (``is_failure``: counted as failed);
* ``Archive``: the task failed for good (``msg``: a ``TaskMessage``, or already-encoded bytes
  for a claim whose own bytes could not be used);
* ``Requeue``: the task goes back to pending, untouched (a worker shutting down);
* ``Advance``: a workflow step succeeded: it is kept (or deleted) as by ``Complete``/``Done`` and,
  in the same script, its successor is created (chain) or its chord counts it (``fastq._rdb.flow``).

An ``Archive`` with a ``link`` archives a workflow step: the same script ends its workflow
(the chain's later steps are dropped; the chord fails, its callback archived and its error
callback enqueued).

``kind`` names the outcome as hooks see it (``task_finished(ctx, outcome, ...)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional, Union

from fastq._codec import TaskMessage

if TYPE_CHECKING:
    from fastq._rdb.flow import Link

__all__ = ["Claim", "Done", "Complete", "Retry", "Archive", "Requeue", "Advance", "Outcome", "TaskId"]

# A task ID as Redis holds it: a str, or bytes when they are not UTF-8 (Go strings may hold any
# bytes; such a task can only be archived, under its raw ID).
TaskId = Union[str, bytes]


@dataclass(slots=True)
class Claim:
    """One task taken by a dequeue (or found held by a worker that is gone).

    ``raw_id`` and ``raw`` (the encoded message, None when the task hash had none) are the
    bytes Redis holds; ``token`` the lease token the claim was made with; ``lease_until`` the
    ``time.monotonic()`` until which the lease is certainly valid (0.0 when not known); ``link``
    the raw ``fastq_flow`` field of a workflow step's hash (None for any other task)."""

    queue: str
    raw_id: bytes
    raw: Optional[bytes]
    token: str
    lease_until: float = 0.0
    link: Optional[bytes] = None


@dataclass(slots=True)
class Done:
    kind: ClassVar[str] = "done"
    queue: str
    id: TaskId
    token: str
    unique_key: str = ""


@dataclass(slots=True)
class Complete:
    kind: ClassVar[str] = "complete"
    queue: str
    id: TaskId
    token: str
    expiry: int  # Unix seconds until which the completed task is kept
    msg: TaskMessage
    unique_key: str = ""
    result: Optional[bytes] = None  # stored as the task's ``result`` field; None keeps what is there


@dataclass(slots=True)
class Retry:
    kind: ClassVar[str] = "retry"
    queue: str
    id: TaskId
    token: str
    msg: TaskMessage
    retry_at: int  # Unix seconds
    is_failure: bool = True


@dataclass(slots=True)
class Archive:
    kind: ClassVar[str] = "archive"
    queue: str
    id: TaskId
    token: str
    msg: Union[TaskMessage, bytes]
    link: Optional[Link] = None  # a workflow step: its workflow ends with it


@dataclass(slots=True)
class Requeue:
    kind: ClassVar[str] = "requeue"
    queue: str
    id: TaskId
    token: str


@dataclass(slots=True)
class Advance:
    """A workflow step succeeded: settled as ``Complete`` (``expiry`` > 0) or ``Done`` (0), and
    its ``link`` followed with ``result`` (the JSON passed on; None: ``null``)."""

    kind: ClassVar[str] = "complete"
    queue: str
    id: TaskId
    token: str
    expiry: int
    msg: TaskMessage
    link: Link
    unique_key: str = ""
    result: Optional[bytes] = None


Outcome = Union[Done, Complete, Retry, Archive, Requeue, Advance]
