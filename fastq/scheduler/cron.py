"""Cron specs as Go Asynq's Scheduler reads them (robfig/cron v3's standard parser), on croniter.

Accepted forms, each optionally prefixed by ``CRON_TZ=<zone> `` or ``TZ=<zone> ``:

* five fields ``minute hour day-of-month month day-of-week`` with ``*``, ``?``
  (day fields), lists ``a,b``, ranges ``a-b``, steps ``*/n`` / ``a-b/n`` and
  month/weekday names (``jan``, ``mon-fri``);
* descriptors ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily``
  ``@midnight`` ``@hourly``;
* ``@every <Go duration>`` such as ``@every 30s`` or ``@every 1h30m``.

croniter computes the next time of a five-field spec in the spec's zone (the
``CRON_TZ=`` zone, else the scheduler's location). Two details follow robfig
rather than croniter: a wall-clock time that does not exist on a
spring-forward day is skipped, not moved to the next valid minute; and
``@every`` needs at least one second and drops fractions of a second.

One deliberate difference: robfig counts ``@every`` from the moment the
scheduler starts; fastq aligns it to the Unix epoch (``@every 30s`` fires at
:00 and :30 of each minute), so every scheduler instance fires the same
ticks and the tick guard can drop the duplicates (see ``fastq.scheduler.scheduler``).
The croniter dependency stays behind this module.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from fastq._gofmt import NANOS, parse_duration
from fastq.errors import CronSpecError, TimeZoneError

__all__ = ["CronSchedule", "parse_cron", "load_zone"]

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")

_VALUE = r"(?:\d+|[A-Za-z]{3})"
_ELEMENT = rf"(?:\*|\?|{_VALUE}(?:-{_VALUE})?)(?:/\d+)?"
_FIELD = re.compile(rf"{_ELEMENT}(?:,{_ELEMENT})*")
_MAX_SKIPS = 64  # DST-gap results skipped in a row before giving up (a real spec needs at most a few)


def load_zone(name: object) -> ZoneInfo:
    """``ZoneInfo(name)`` with a ``TimeZoneError`` that names the zone instead of KeyError/ValueError."""
    if isinstance(name, ZoneInfo):
        return name
    if not isinstance(name, str) or not name.strip():
        raise TimeZoneError(name, "time zone must be a non-empty IANA name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeZoneError(name) from None


@dataclass(frozen=True)
class CronSchedule:
    """A parsed spec: either a five-field ``expr`` or an ``every`` period in whole seconds."""

    spec: str
    expr: Optional[str] = None
    every: Optional[int] = None
    zone: Optional[ZoneInfo] = None  # from CRON_TZ= / TZ=; None = the scheduler's location
    _minutes: tuple[Any, ...] = ()
    _hours: tuple[Any, ...] = ()

    def next_after(self, after: float, location: tzinfo = timezone.utc) -> float:
        """The first fire time strictly after Unix time ``after``, as a whole-second Unix time."""
        if self.every is not None:
            return float((math.floor(after) // self.every + 1) * self.every)
        zone = self.zone or location
        start = datetime.fromtimestamp(after, zone)
        it = croniter(self.expr, start)
        for _ in range(_MAX_SKIPS):
            try:
                t = it.get_next(datetime)
            except CroniterError:
                raise CronSpecError(self.spec, f"no fire time after {start.isoformat()}") from None
            if (self._minutes == ("*",) or t.minute in self._minutes) and \
                    (self._hours == ("*",) or t.hour in self._hours):
                return float(t.timestamp())
            # croniter moved a time inside a spring-forward gap to the next valid minute; robfig skips it.
        raise CronSpecError(self.spec, "no valid fire time found")  # pragma: no cover - defensive

    def identity(self, location: tzinfo = timezone.utc) -> str:
        """A canonical text of *when* this schedule fires, the same for equivalent specs.

        ``@daily`` and ``0 0 * * *`` give the same identity; so do
        ``CRON_TZ=Europe/Paris 0 9 * * *`` and ``0 9 * * *`` in a scheduler
        whose location is Europe/Paris. ``@every`` ignores zones.
        """
        if self.every is not None:
            return f"@every {self.every}s"
        zone = self.zone or location
        return f"{getattr(zone, 'key', str(zone))} {self.expr}"


def _zone_prefix(spec: str, text: str) -> tuple[Optional[ZoneInfo], str]:
    if not (text.startswith("TZ=") or text.startswith("CRON_TZ=")):
        return None, text
    head, sep, rest = text.partition(" ")
    name = head.split("=", 1)[1]
    if not sep or not rest.strip():
        raise CronSpecError(spec, f"nothing follows the time zone prefix {head!r}")
    try:
        return load_zone(name), rest.strip()
    except TimeZoneError:
        raise CronSpecError(spec, f"unknown time zone {name!r} in {head.split('=')[0]}=") from None


def _parse_every(spec: str, text: str) -> CronSchedule:
    try:
        nanos = parse_duration(text)
    except ValueError as exc:
        raise CronSpecError(spec, f"@every needs a Go duration such as 30s or 1h30m ({exc})") from None
    if nanos < NANOS:
        raise CronSpecError(spec, "@every needs a duration of at least 1s")
    return CronSchedule(spec, every=nanos // NANOS)


def _parse_fields(spec: str, expr: str, zone: Optional[ZoneInfo]) -> CronSchedule:
    fields = expr.split()
    if len(fields) != 5:
        raise CronSpecError(spec, f"expected exactly 5 fields (minute hour day-of-month month day-of-week), "
                                  f"found {len(fields)}")
    for name, field in zip(FIELD_NAMES, fields, strict=False):
        if not _FIELD.fullmatch(field):
            raise CronSpecError(spec, f"bad {name} field {field!r}")
    expr = " ".join(fields)
    try:
        expanded = croniter.expand(expr)[0]
        croniter(expr, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except CroniterError as exc:
        reason = str(exc) or type(exc).__name__
        if "failed to find" in reason:
            reason = "it never fires (no date matches)"
        raise CronSpecError(spec, reason) from None
    return CronSchedule(spec, expr=expr, zone=zone, _minutes=tuple(expanded[0]), _hours=tuple(expanded[1]))


def parse_cron(spec: str) -> CronSchedule:
    """Parse ``spec`` or raise ``CronSpecError`` saying what is wrong with it."""
    if not isinstance(spec, str):
        raise CronSpecError(repr(spec), f"a cron spec must be a str, not {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise CronSpecError(spec, "empty spec")
    zone, text = _zone_prefix(spec, text)
    if text.startswith("@every"):
        rest = text[len("@every"):]
        if not rest[:1].isspace() or not rest.strip():
            raise CronSpecError(spec, "@every needs a duration, e.g. '@every 30s'")
        return _parse_every(spec, rest.strip())
    if text.startswith("@"):
        expr = DESCRIPTORS.get(text.lower())
        if expr is None:
            raise CronSpecError(spec, f"unknown descriptor {text!r}; use one of {', '.join(DESCRIPTORS)} "
                                      f"or '@every <duration>'")
        return _parse_fields(spec, expr, zone)
    return _parse_fields(spec, text, zone)
