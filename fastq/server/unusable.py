"""Claims whose bytes cannot be used: archived with the reason, never left to block a queue.

Go strings may hold any bytes, and anyone can write a task hash: a claim's ID may not be UTF-8,
its message may be missing or not decode. The fetch loop, lease recovery, the supervisor's
recovery and the aggregator archive such a task as ``fastq:undecodable`` with its raw bytes.
"""
from __future__ import annotations

import logging
from typing import Union

from fastq._codec import TaskMessage, encode_message
from fastq._rdb.outcome import Archive
from fastq.options import DEFAULT_TIMEOUT

__all__ = ["UNDECODABLE_TYPE", "printable_id", "undecodable_message", "archive_unusable"]

log = logging.getLogger("fastq.processor")

UNDECODABLE_TYPE = "fastq:undecodable"


def printable_id(tid: Union[str, bytes]) -> str:
    """A task ID for log lines and messages: non-UTF-8 bytes escaped as ``\\xNN``."""
    return tid.decode("utf-8", "backslashreplace") if isinstance(tid, bytes) else tid


def undecodable_message(queue: str, tid: Union[str, bytes], raw: bytes, reason: str, now: float) -> bytes:
    """The encoded message stored for a task archived because its data cannot be used.

    Its type is ``fastq:undecodable``, its payload the raw message bytes (empty when the hash had
    none), its error the reason. An ID that is not UTF-8 stays the key of the hash and the member
    of the archived set (that is how the task is found); the message's ``id`` field, a protobuf
    string, holds it with the bad bytes escaped."""
    msg = TaskMessage(type=UNDECODABLE_TYPE, payload=bytes(raw), id=printable_id(tid), queue=queue,
                      error_msg=reason, last_failed_at=int(now), timeout=DEFAULT_TIMEOUT)
    return encode_message(msg)


def archive_unusable(queue: str, tid: Union[str, bytes], token: str, raw: bytes, reason: str, now: float) -> Archive:
    """The outcome for a claim whose ID or message cannot be used, logged once with the reason."""
    log.error("task %s in queue %s archived: %s", printable_id(tid), queue, reason)
    return Archive(queue, tid, token, undecodable_message(queue, tid, raw, reason, now))
