"""The limits on what fastq writes to Redis, in one place.

``fastq.options`` (enqueue options, also used by the scheduler, periodic configs and the group
aggregator), ``fastq.task`` (task type and headers) and ``fastq.server.config`` (the queues a
worker serves) call these checks, so a value is refused the same way everywhere: with
``InvalidOptionError`` naming the option, before anything is written.

The bounds, and why:

* **Durations** (``timeout``, ``retention``, ``unique``, ``process_in``): at most
  ``MAX_DURATION`` = 100 years (3,155,760,000 s). Asynq stores them as int64 seconds and a Go
  worker turns ``timeout`` into a ``time.Duration`` (int64 nanoseconds, at most ~292 years), so
  anything longer overflows on the Go side; 100 years also keeps ``now + value`` inside int64,
  inside what Redis ``EXPIRE``/``SET EX`` accept (milliseconds in an int64), inside Python's
  ``threading.TIMEOUT_MAX`` (~292 years) and inside ``datetime`` (year 9999). No real task waits
  that long; a larger value is a unit mistake (milliseconds for seconds) or "forever".
* **Points in time** (``process_at``, ``deadline``): at most ``MAX_UNIX`` =
  9999-12-31T23:59:59 UTC, the last second a ``datetime`` can represent (``TaskInfo`` gives them
  back as datetimes); Asynq stores them as int64 Unix seconds.
* **Task type**: non-blank, valid UTF-8 (no lone surrogates: protobuf strings must be UTF-8 and
  Go's decoder refuses anything else), no control characters (U+0000-U+001F, U+007F-U+009F: NUL
  and newlines break logs, the CLI and metric labels), at most ``MAX_TYPE_BYTES`` = 1024 bytes of
  UTF-8 (the type is part of every unique key and of every log line about the task).
* **Queue name**: non-blank, valid UTF-8, no ``{``, ``}``, whitespace or control characters, at
  most ``MAX_QUEUE_BYTES`` = 255 bytes of UTF-8. Every key of a queue is ``asynq:{<queue>}:...``:
  Redis Cluster hashes the text between the first ``{`` and the next ``}``, so a brace in the name
  would spread one queue's keys over several slots (its scripts then fail with CROSSSLOT) or
  share a slot with another queue; whitespace and control characters make names that the CLI,
  the ``--queues`` flag and logs cannot show or parse back. The name is repeated in every key,
  hence the tighter length bound.
* **Other names** (``task_id``, ``group``) and **header** keys and values: valid UTF-8 (they are
  protobuf strings or parts of keys).
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from fastq.errors import InvalidOptionError

__all__ = ["MAX_DURATION", "MAX_UNIX", "MAX_TYPE_BYTES", "MAX_QUEUE_BYTES", "seconds", "whole_seconds",
           "positive_seconds", "number_at_least", "int_at_least", "port", "unix", "text", "queue_name", "task_type",
           "headers"]

MAX_DURATION = 3_155_760_000  # seconds: 100 years of 365.25 days
MAX_UNIX = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime can represent
MAX_TYPE_BYTES = 1024
MAX_QUEUE_BYTES = 255

_SURROGATE = re.compile(r"[\ud800-\udfff]")  # in a str, always a lone one: not encodable as UTF-8
_BAD_TYPE_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_QUEUE_CHAR = re.compile(r"[\s{}\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _show(value: Any) -> str:
    """``repr(value)``, cut short (a 1-million-character type name should not fill the log)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"


# ---------------------------------------------------------------- durations and times

def seconds(name: str, value: Any) -> float:
    """Seconds from a number or a ``timedelta``: finite, not negative, at most ``MAX_DURATION``."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(f"option {name!r} must be a number of seconds or a timedelta, "
                                 f"not {type(value).__name__}")
    elif isinstance(value, int):
        if value > MAX_DURATION:  # before float(): a huge int does not fit in a float
            raise _too_long(name, value)
        result = float(value)
    else:
        result = float(value)
    if math.isnan(result) or math.isinf(result):
        raise InvalidOptionError(f"option {name!r} must be finite, got {value!r}")
    if result < 0:
        raise InvalidOptionError(f"option {name!r} must not be negative, got {_show(value)}")
    if result > MAX_DURATION:
        raise _too_long(name, value)
    return result


def _too_long(name: str, value: Any) -> InvalidOptionError:
    return InvalidOptionError(f"option {name!r} must be at most {MAX_DURATION} seconds (100 years), "
                              f"got {_show(value)}")


def whole_seconds(name: str, value: Any) -> int:
    """``seconds``, as the whole seconds Asynq stores; a value that would truncate to 0 is refused."""
    result = seconds(name, value)
    if 0 < result < 1:
        raise InvalidOptionError(f"option {name!r} must be 0 or at least 1 second (Asynq stores whole "
                                 f"seconds), got {value!r}")
    return int(result)


def _named(name: str, rule: str) -> str:
    return f"{name} {rule}" if name else rule


def positive_seconds(name: str, value: Any) -> float:
    """An interval in seconds (a number, not a ``timedelta``): finite and > 0 (the scheduler's
    heartbeat and sync intervals). ``InvalidOptionError`` names ``name`` (empty: the bare rule,
    for a command line that shows the option itself)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(_named(name, f"must be a number of seconds, not {type(value).__name__}"))
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise InvalidOptionError(_named(name, f"must be a finite number of seconds > 0, got {value!r}"))
    return float(value)


def number_at_least(name: str, value: Any, minimum: float = 0.0) -> float:
    """A finite number >= ``minimum`` (command-line seconds and megabytes); ``name`` as in
    ``positive_seconds``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(_named(name, f"must be a number, not {type(value).__name__}"))
    if math.isnan(value) or math.isinf(value) or value < minimum:
        raise InvalidOptionError(_named(name, f"must be a finite number >= {minimum:g}, got {value!r}"))
    return float(value)


def int_at_least(name: str, value: Any, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``; ``name`` as in ``positive_seconds``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptionError(_named(name, f"must be an integer, not {type(value).__name__}"))
    if value < minimum:
        raise InvalidOptionError(_named(name, f"must be at least {minimum}, got {value}"))
    return value


def port(name: str, value: Any) -> int:
    """A TCP port, 0-65535 (0: any free port); ``name`` as in ``positive_seconds``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptionError(_named(name, f"must be a port number, not {type(value).__name__}"))
    if not 0 <= value <= 65535:
        raise InvalidOptionError(_named(name, f"must be a port, 0-65535, got {value}"))
    return value


def unix(name: str, value: Any) -> int:
    """Whole Unix seconds of a ``datetime`` (naive ones are local time, as ``datetime.timestamp()``
    says), at most ``MAX_UNIX``."""
    if not isinstance(value, datetime):
        raise InvalidOptionError(f"option {name!r} must be a datetime, not {type(value).__name__}")
    try:
        # whole seconds first: a float timestamp of 23:59:59.999999 would round up to the next second
        result = int(value.replace(microsecond=0).timestamp())
    except (OverflowError, OSError, ValueError) as exc:  # naive times far from now, on some platforms
        raise InvalidOptionError(f"option {name!r}: {value!r} has no Unix time ({exc})") from None
    if result > MAX_UNIX:
        raise InvalidOptionError(f"option {name!r} must be at most 9999-12-31T23:59:59 UTC, got {value!r}")
    return result


# ---------------------------------------------------------------- names

def text(name: str, value: Any) -> str:
    """A non-blank str that is valid UTF-8 (``task_id``, ``group``)."""
    if not isinstance(value, str):
        raise InvalidOptionError(f"option {name!r} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidOptionError(f"option {name!r} must not be empty or blank")
    if not value.isascii() and _SURROGATE.search(value):
        raise InvalidOptionError(f"option {name!r} must be valid UTF-8 (it holds a lone surrogate), "
                                 f"got {_show(value)}")
    return value


def queue_name(value: Any, label: str = "option 'queue'") -> str:
    """A queue name that fits in ``asynq:{<queue>}:...`` keys (see the module docstring).

    ``label`` starts the error message (``parse_queues`` names the ``queues`` spec instead).
    """
    if not isinstance(value, str):
        raise InvalidOptionError(f"{label} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidOptionError(f"{label} must not be empty or blank")
    bad = _BAD_QUEUE_CHAR.search(value)
    if bad is not None:
        char = bad.group()
        if "\ud800" <= char <= "\udfff":
            reason = "must be valid UTF-8 (it holds a lone surrogate)"
        else:
            reason = (f"must not contain {char!r}: no '{{', '}}', whitespace or control characters (keys are "
                      f"asynq:{{<queue>}}:..., and Redis Cluster hashes the text between the braces)")
        raise InvalidOptionError(f"{label} {reason}, got {_show(value)}")
    if len(value) > MAX_QUEUE_BYTES // 4 and len(value.encode("utf-8")) > MAX_QUEUE_BYTES:
        raise InvalidOptionError(f"{label} must be at most {MAX_QUEUE_BYTES} bytes of UTF-8, "
                                 f"got {len(value.encode('utf-8'))}: {_show(value)}")
    return value


def task_type(value: Any) -> str:
    """A task type name (see the module docstring); a non-str is a ``TypeError``."""
    if value.__class__ is str and value.isascii() and value.isprintable() and len(value) <= MAX_TYPE_BYTES \
            and value.strip():
        return value  # the common case (printable ASCII), in ~100 ns: Task() runs this for every task
    if not isinstance(value, str):
        raise TypeError(f"task type must be str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidOptionError("task type must not be empty or blank")
    bad = _BAD_TYPE_CHAR.search(value)
    if bad is not None:
        char = bad.group()
        if "\ud800" <= char <= "\udfff":
            reason = "must be valid UTF-8 (it holds a lone surrogate)"
        else:
            reason = f"must not contain control characters such as NUL or newline, found {char!r}"
        raise InvalidOptionError(f"task type {reason}: {_show(value)}")
    size = len(value.encode("utf-8"))
    if size > MAX_TYPE_BYTES:
        raise InvalidOptionError(f"task type must be at most {MAX_TYPE_BYTES} bytes of UTF-8, got {size}: "
                                 f"{_show(value)}")
    return value


def headers(value: Mapping[str, str]) -> dict[str, str]:
    """A copy of task headers: str to str (else ``TypeError``), valid UTF-8."""
    result = dict(value)
    for k, v in result.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("task headers must map str to str")
        if not (k.isascii() and v.isascii()) and (_SURROGATE.search(k) or _SURROGATE.search(v)):
            raise InvalidOptionError(f"task headers must be valid UTF-8 (lone surrogate in header {_show(k)})")
    return result


# ---------------------------------------------------------------- numbers of any option (connection, worker settings)

__all__ += ["number", "number_text"]


def number(name: str, value: Any, minimum: float = 0.0, *, integer: bool = False, above: bool = False,
           what: str | None = None, error: Callable[[str], Exception] = InvalidOptionError) -> Any:
    """``value``, unchanged, if it is a finite number (an int when ``integer``; never a bool) of at
    least ``minimum`` (more than it when ``above``); else ``error(message)`` naming ``name``.

    ``what`` is the kind of value the message asks for when ``value`` is no number at all (default
    "an integer" or "a number"); ``error`` the exception class (``fastq.redis`` raises
    ``ConnectionConfigError``).
    """
    kind = what or ("an integer" if integer else "a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{name} must be {kind}, not {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise error(f"{name} must be an integer, not {type(value).__name__} ({value!r})")
    if math.isnan(value) or math.isinf(value) or value < minimum or (above and value == minimum):
        if above and minimum == 0:
            wanted = "a positive " + kind.split(" ", 1)[1]  # "a number of seconds" -> "a positive number of seconds"
        else:
            wanted = f"{'more than' if above else 'at least'} {minimum:g}"
        raise error(f"{name} must be {wanted}, got {value!r}")
    return value


def number_text(name: str, text: str, *, integer: bool = False,
                error: Callable[[str], Exception] = InvalidOptionError) -> int | float:
    """The number written in ``text`` (a URL query or environment value): an int when ``integer``,
    else a float; ``error`` names ``name`` when it is none. ``number`` checks its range."""
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise error(f"{name} must be {'an integer' if integer else 'a number'}, got {text!r}") from None
