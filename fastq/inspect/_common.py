"""Argument checks and constants of the Inspector: its operations (``fastq._rdb.inspect_read``,
``fastq._rdb.inspect_write``), the CLI and the dashboard share them. No Redis I/O here."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastq.errors import InvalidOptionError
from fastq.task import TaskState

DEFAULT_PAGE_SIZE = 30
MAX_PAGE_SIZE = 10_000       # one page is one script call; keep it short
BATCH_SIZE = 1000            # tasks per script call in bulk operations
MAX_HISTORY_DAYS = 3650
ARCHIVE_MAX_SIZE = 10_000    # Asynq's maxArchiveSize
ARCHIVE_MAX_AGE = 90 * 24 * 3600

LIST_STATES = tuple(s.value for s in TaskState)
DELETE_ALL_STATES = ("pending", "scheduled", "retry", "archived", "completed", "aggregating")
RUN_ALL_STATES = ("scheduled", "retry", "archived", "aggregating")
ARCHIVE_ALL_STATES = ("pending", "scheduled", "retry", "aggregating")

def name(what: str, value: Any) -> str:
    """A queue name, task ID, group or entry ID: a str that is not blank (as Go validates)."""
    if not isinstance(value, str):
        raise InvalidOptionError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidOptionError(f"{what} must not be empty or blank")
    return value


def state(value: Any, allowed: tuple[str, ...], operation: str = "list") -> str:
    text = value.value if isinstance(value, TaskState) else value
    if text not in allowed:
        raise InvalidOptionError(f"cannot {operation} tasks in state {value!r}; "
                                 f"choose one of: {', '.join(allowed)}")
    return text


def group_for(state_: str, group: Any) -> str:
    """The group argument: required for the aggregating state, refused for the others."""
    if state_ == "aggregating":
        if group is None:
            raise InvalidOptionError("a group is required for tasks in state 'aggregating'")
        return name("group", group)
    if group is not None:
        raise InvalidOptionError(f"a group only applies to state 'aggregating', not {state_!r}")
    return ""


def positive_int(what: str, value: Any, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOptionError(f"{what} must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidOptionError(f"{what} must be at least 1, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidOptionError(f"{what} must be at most {maximum}, got {value}")
    return value


def page_args(page: Any, page_size: Any) -> tuple[int, int]:
    return positive_int("page", page), positive_int("page_size", page_size, MAX_PAGE_SIZE)


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def utc(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds else None
