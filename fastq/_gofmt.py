"""Go's text formats that Asynq stores or parses: durations, ``%q`` strings, ``time.UnixDate``.

Go's Scheduler writes each enqueue option of an entry as the option's
``String()`` (``Queue("critical")``, ``Timeout(1m30s)``, ``Deadline(Mon Jan  2
15:04:05 UTC 2006)``) into ``SchedulerEntry.enqueue_options``; Go's Inspector
parses them back with ``time.ParseDuration``, ``strconv.Unquote`` and
``time.Parse(time.UnixDate, ...)``. ``option_strings`` renders fastq's snake
case options the same way; ``parse_duration`` is ``time.ParseDuration``
(used for ``@every <duration>`` cron specs).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

__all__ = ["format_duration", "parse_duration", "quote", "format_unix_date", "option_strings"]

NANOS = 1_000_000_000

_UNITS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
          "s": NANOS, "m": 60 * NANOS, "h": 3600 * NANOS}
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def _frac(value: int, prec: int) -> str:
    """``value / 10**prec`` printed as Go does: trailing zeros and a bare dot dropped."""
    whole, frac = divmod(value, 10**prec)
    if not frac:
        return str(whole)
    return f"{whole}." + str(frac).rjust(prec, "0").rstrip("0")


def format_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String()``: ``0s``, ``1.5s``, ``1m30s``, ``1h0m0s``, ``500ms``, ``2µs``."""
    u = abs(int(nanoseconds))
    if u == 0:
        return "0s"
    if u < NANOS:
        if u < 1_000:
            text = f"{u}ns"
        elif u < 1_000_000:
            text = _frac(u, 3) + "\u00b5s"
        else:
            text = _frac(u, 6) + "ms"
    else:
        secs = u // NANOS
        text = _frac(u % (60 * NANOS), 9) + "s"
        minutes = secs // 60
        if minutes:
            text = f"{minutes % 60}m" + text
            if minutes // 60:
                text = f"{minutes // 60}h" + text
    return "-" + text if nanoseconds < 0 else text


def seconds_to_nanos(value: float | int | timedelta) -> int:
    """An option duration (seconds or timedelta) as whole nanoseconds, without float drift for timedelta."""
    if isinstance(value, timedelta):
        return (value // timedelta(microseconds=1)) * 1_000
    return int(round(value * NANOS))


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration``: ``"1h30m"``, ``"1.5s"``, ``"300ms"`` -> nanoseconds.

    Raises ``ValueError`` naming the text for anything Go would refuse.
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string, got {type(text).__name__}")
    s = text
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:  # the pattern's groups are all optional, so it matches (maybe empty) anywhere
            raise ValueError(f"invalid duration {text!r}")
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError(f"invalid duration {text!r}")
        if not unit:
            raise ValueError(f"missing unit in duration {text!r}")
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        scale = _UNITS[unit]
        total += int(whole or 0) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    if total > 2**63 - 1:
        raise ValueError(f"invalid duration {text!r}: too large")
    return sign * total


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            "\\": "\\\\", '"': '\\"'}


def quote(text: str) -> str:
    """Go's ``strconv.Quote`` (the ``%q`` verb): printable characters kept, the rest escaped."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_unix_date(when: datetime) -> str:
    """Go's ``time.UnixDate`` layout, in UTC: ``Mon Jan  2 15:04:05 UTC 2006``.

    A naive datetime is local time (as ``datetime.timestamp()`` reads it). UTC
    is used because Go's ``time.Parse`` maps the abbreviation ``UTC`` to UTC,
    whereas a local abbreviation such as ``EST`` would parse with offset 0.
    """
    t = when.astimezone(timezone.utc)
    return (f"{_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day:>2} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} UTC {t.year}")


# fastq option name -> (Go option name, how its value is printed)
_OPTION_FORMS = {
    "queue": ("Queue", "q"), "task_id": ("TaskID", "q"), "group": ("Group", "q"),
    "max_retry": ("MaxRetry", "d"), "timeout": ("Timeout", "dur"), "unique": ("Unique", "dur"),
    "retention": ("Retention", "dur"), "process_in": ("ProcessIn", "dur"),
    "deadline": ("Deadline", "date"), "process_at": ("ProcessAt", "date"),
}


def option_strings(options: Mapping[str, Any]) -> list[str]:
    """Each option's Go ``String()`` form, in the order given; ``None`` values (unset) are left out.

    The options must already be valid (see ``fastq.options.plan_enqueue``).
    """
    out = []
    for name, value in options.items():
        if value is None:
            continue
        go_name, form = _OPTION_FORMS.get(name, (name, "repr"))
        if form == "q":
            text = quote(value)
        elif form == "d":
            text = str(int(value))
        elif form == "dur":
            text = format_duration(seconds_to_nanos(value))
        elif form == "date":
            text = format_unix_date(value)
        else:  # an option Go does not have: shown, and ignored by Go's Inspector like any it cannot parse
            text = repr(value)
        out.append(f"{go_name}({text})")
    return out
