"""Fleet-wide rate and concurrency limits per task type, enforced by the workers through Redis.

``TaskLimits`` says what one task type may do (``rate="100/s"``, ``concurrency=5``, each
optionally per key, a function of the task); ``WorkerConfig.limits`` maps task types to them
(``fastq.App`` fills it from ``@app.task(rate_limit=..., concurrency_limit=...)``). A worker
with no limits runs none of this.

``Limits`` is the worker's side (one per processor):

* ``admit(claims)``: after a dequeue, every claim of a limited type is checked in one
  ``limit_admit.lua`` call (no call when the batch has none); a claim over a limit is moved by
  that call from active to scheduled (not a failure, ``retried`` unchanged) and not started;
* the concurrency slots of admitted tasks are extended by the lease thread with their leases
  (``extend``) and freed in the round trip that writes their outcomes (``settle``, which the
  processor's ack buffer calls instead of ``Broker.settle``); a freed slot wakes a waiter;
* ``forward_loop``: rate-limited tasks wait with fractional scores; this loop moves due
  scheduled tasks to pending every ``FORWARD_TICK`` by the Redis clock to the microsecond (the
  forwarder works in whole seconds, as Asynq's), so a rate is spread evenly, not in bursts.

A key function that raises or returns something other than a ``str`` archives its task with
the reason (the task is kept, and can be run again from the archive once the function is fixed).
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from redis.exceptions import RedisError

from fastq import keys
from fastq._codec import decode_message
from fastq._rdb import limits as _rdb
from fastq._rdb.calls import aexecute
from fastq._rdb.outcome import Archive, Claim, Outcome, Requeue
from fastq.errors import DecodeError, InvalidOptionError
from fastq.task import Task

__all__ = ["TaskLimits", "Limits", "parse_rate", "check_limits", "CONCURRENCY_WAIT", "FORWARD_TICK", "RATE_TOLERANCE",
           "RESERVATION_GRACE"]

log = logging.getLogger("fastq.limits")

# Seconds the first task waiting for a concurrency slot stays scheduled unless a freed slot wakes it
# first (the fallback when a slot comes back by lease expiry: a killed worker's); the n-th waiter
# stays CONCURRENCY_WAIT x (1 + n / limit) seconds, at most CONCURRENCY_WAIT_MAX: freed slots wake
# waiters oldest first, so a long line of waiters is not checked again and again meanwhile.
CONCURRENCY_WAIT = 5.0
CONCURRENCY_WAIT_MAX = 3600.0
# A task whose rate slot is at most this far ahead runs at once (GCRA's burst tolerance): a
# dequeue batch of a type limited far above what the workers do is admitted whole, and no window
# of any length holds more than rate x (window + RATE_TOLERANCE) + 1 tasks.
RATE_TOLERANCE = 0.01
# A task back from waiting for its reserved rate slot runs without being counted again if it comes
# back within this many seconds after that slot; later (the workers were down, or busy with a
# backlog) it is checked again, so reservations that piled up during an outage do not run at once.
RESERVATION_GRACE = 2.0
# How often due scheduled tasks are moved to pending by a worker that has rate limits.
FORWARD_TICK = 0.05
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")


def parse_rate(value: Any, what: str = "rate_limit") -> float:
    """Seconds between two tasks (1 / rate) of ``"<n>/s"``, ``"<n>/m"`` or ``"<n>/h"`` (n > 0,
    an integer or a decimal). ``InvalidOptionError`` naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise InvalidOptionError(f"{what} must be a string like '100/s', '10/m' or '5/h', got {value!r}")
    m = _RATE.match(value)
    if m is None:
        raise InvalidOptionError(f"{what} must look like '100/s', '10/m' or '5/h' (tasks per second, minute or "
                                 f"hour), got {value!r}")
    count = float(m.group(1))
    if not count > 0 or not math.isfinite(count):
        raise InvalidOptionError(f"{what} must allow more than 0 tasks, got {value!r}")
    return _UNITS[m.group(2)] / count


@dataclass(frozen=True)
class TaskLimits:
    """The limits of one task type across every worker.

    ``rate``: ``"100/s"`` (or ``/m``, ``/h``), None for no rate limit; ``concurrency``: at most
    this many running at once (0: no limit). ``rate_key`` / ``concurrency_key``: a function of the
    ``fastq.Task`` returning a ``str``: one limit per distinct key instead of one for the type.
    """

    rate: Optional[str] = None
    concurrency: int = 0
    rate_key: Optional[Callable[[Task], str]] = None
    concurrency_key: Optional[Callable[[Task], str]] = None
    interval: float = field(init=False, default=0.0)  # seconds between two tasks (1 / rate); 0: none

    def __post_init__(self) -> None:
        if self.rate is not None:
            object.__setattr__(self, "interval", parse_rate(self.rate))
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise InvalidOptionError(f"concurrency_limit must be an integer >= 1, got {c!r}")
        for name, fn, base in (("rate_key", self.rate_key, self.rate), ("concurrency_key", self.concurrency_key, c)):
            if fn is not None and not callable(fn):
                raise InvalidOptionError(f"{name} must be a function of the task's arguments returning a str, "
                                         f"got {type(fn).__name__}")
            if fn is not None and not base:
                other = "rate_limit" if name == "rate_key" else "concurrency_limit"
                raise InvalidOptionError(f"{name} needs {other} (it says what the limit is counted per)")

    def __bool__(self) -> bool:
        return bool(self.interval or self.concurrency)


def check_limits(limits: Any) -> dict[str, TaskLimits]:
    """``WorkerConfig.limits``: a mapping of task type to ``TaskLimits`` (empty ones dropped)."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise InvalidOptionError(f"limits must be a mapping of task type to TaskLimits, got "
                                 f"{type(limits).__name__}")
    for name, rule in limits.items():
        if not isinstance(name, str) or not isinstance(rule, TaskLimits):
            raise InvalidOptionError(f"limits must map task type names (str) to TaskLimits, got {name!r}: {rule!r}")
    return {name: rule for name, rule in limits.items() if rule}


class KeyFunctionError(Exception):
    """A key function failed: the task is archived with this text."""


def _key(fn: Optional[Callable[[Task], str]], option: str, task: Task) -> Optional[str]:
    if fn is None:
        return None
    try:
        value = fn(task)
    except Exception as exc:  # noqa: BLE001 - archived with the reason
        raise KeyFunctionError(f"{option} of task type {task.type!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, str):
        raise KeyFunctionError(f"{option} of task type {task.type!r} returned a {type(value).__name__}, not a str")
    return value


def _type_of(raw: bytes) -> bytes:
    """The task type of an encoded message: field 1 comes first (cheap); else a full decode."""
    if len(raw) > 1 and raw[0] == 0x0A and raw[1] < 0x80:
        return raw[2:2 + raw[1]]
    try:
        return decode_message(raw).type.encode()
    except (DecodeError, UnicodeError):
        return b""


class Limits:
    """A processor's admission, slot bookkeeping and precise forwarder (see the module doc).

    ``redis``: the worker's asyncio client; ``acks``: the processor's outcome buffer (claims
    that cannot be admitted are archived or requeued through it); ``health``: its RedisHealth."""

    def __init__(self, rules: Mapping[str, TaskLimits], redis: Any, acks: Any, health: Any, lease: int = 30) -> None:
        self.rules = dict(rules)
        self.lease = lease  # the claims' lease (s): a concurrency slot is taken for that long
        self._by_type = {name.encode(): rule for name, rule in rules.items()}
        self.redis = redis
        self.acks = acks
        self.health = health
        self.held: dict[str, _rdb.Slot] = {}  # running tasks' concurrency slots, by task ID
        self._release: dict[Any, _rdb.Slot] = {}  # slots of settled tasks: freed with their outcome
        self._names: dict[tuple[str, str], tuple[str, str, str]] = {}  # key names of limits without keys
        self._plain: dict[tuple[str, bytes], _rdb.Ask] = {}  # asks of limits without keys, by queue and type

    # ------------------------------------------------------------ admission

    async def admit(self, claims: list[Claim]) -> list[Claim]:
        """The claims to start: those of unlimited types, and those of limited types that
        ``limit_admit`` admitted. The others are scheduled (over a limit), archived (key function
        failed) or, when Redis fails, put back to pending."""
        by_type = self._by_type
        out: list[Claim] = []
        groups: dict[tuple[Optional[str], Optional[str]], tuple[_rdb.Ask, list[str], list[Claim]]] = {}
        for claim in claims:
            raw = claim.raw
            if raw is None:
                out.append(claim)
                continue
            type_ = _type_of(raw)
            rule = by_type.get(type_)
            if rule is None:
                out.append(claim)
                continue
            try:
                tid = claim.raw_id.decode()
            except UnicodeDecodeError:
                out.append(claim)  # the processor archives it with the reason
                continue
            if rule.rate_key is None and rule.concurrency_key is None:  # no need to decode the message
                limits = self._plain_limits(claim.queue, type_, rule)
            else:
                try:
                    msg = decode_message(raw)
                except DecodeError:
                    out.append(claim)
                    continue
                if msg.id != tid:
                    out.append(claim)
                    continue
                keyed = self._keyed_limits(claim.queue, tid, msg, rule, claim.token)
                if keyed is None:
                    continue  # archived
                limits = keyed
            group = groups.get((limits.rate_key, limits.slots_key))
            if group is None:
                group = groups[(limits.rate_key, limits.slots_key)] = (limits, [], [])
            group[1].append(tid)
            group[2].append(claim)
        if not groups:
            return out
        asked = [c for _, _, cs in groups.values() for c in cs]
        queue, token = asked[0].queue, asked[0].token
        try:
            reply = await _rdb.admit_groups(self.redis, queue, token, [(g[0], g[1]) for g in groups.values()],
                                            CONCURRENCY_WAIT, RATE_TOLERANCE, RESERVATION_GRACE, self.lease,
                                            CONCURRENCY_WAIT_MAX)
        except (RedisError, OSError) as exc:
            self.health.failed("admit", exc)
            for claim in asked:
                self.acks.add(Requeue(queue, claim.raw_id.decode(), token))
            return out
        if self.health.troubled:
            self.health.ok("admit")
        at = 0
        held = self.held
        for limits, ids, group_claims in groups.values():
            slots_key = limits.slots_key
            for tid, claim in zip(ids, group_claims, strict=True):
                status = reply[at]
                at += 1
                if status == 49:  # "1": admitted
                    if slots_key is not None:
                        held[tid] = _rdb.Slot(queue, tid, token, slots_key, limits.waiters_key or "")
                    out.append(claim)
        return out

    def _keyed_limits(self, queue: str, tid: str, msg: Any, rule: TaskLimits, token: str) -> Optional[_rdb.Ask]:
        """The limits of a claim whose limits have key functions (None: archived, a key function failed)."""
        task = Task._trusted(msg.type, msg.payload, msg.headers)
        try:
            ask = _rdb.Ask("")
            if rule.interval:
                ask.rate_key = self._key_names(queue, msg.type, _key(rule.rate_key, "rate_key", task))[0]
                ask.interval = rule.interval
            if rule.concurrency:
                _, ask.slots_key, ask.waiters_key = self._key_names(
                    queue, msg.type, _key(rule.concurrency_key, "concurrency_key", task))
                ask.limit = rule.concurrency
            return ask
        except KeyFunctionError as exc:
            log.error("task %s archived: %s", tid, exc)
            failed = msg.copy()
            failed.error_msg = str(exc)
            failed.last_failed_at = int(time.time())
            self.acks.add(Archive(queue, tid, token, failed))
            return None

    def _plain_limits(self, queue: str, type_: bytes, rule: TaskLimits) -> _rdb.Ask:
        """The limits of a claim whose limits have no key function (cached per queue and type)."""
        limits = self._plain.get((queue, type_))
        if limits is None:
            if len(self._plain) > 1024:
                self._plain.clear()
            rate, slots, waiters = self._key_names(queue, type_.decode("utf-8", "surrogateescape"), None)
            limits = self._plain[(queue, type_)] = _rdb.Ask(
                "", rate if rule.interval else None, rule.interval, slots if rule.concurrency else None,
                waiters if rule.concurrency else None, rule.concurrency)
        return limits

    def _key_names(self, queue: str, task_type: str, key: Optional[str]) -> tuple[str, str, str]:
        """(rate, slots, waiters) key names; cached for limits without a key function."""
        if key is None:
            names = self._names.get((queue, task_type))
            if names is None:
                if len(self._names) > 1024:
                    self._names.clear()
                names = self._names[(queue, task_type)] = (keys.rate_key(queue, task_type),
                                                           keys.slots_key(queue, task_type),
                                                           keys.slot_waiters_key(queue, task_type))
            return names
        return (keys.rate_key(queue, task_type, key), keys.slots_key(queue, task_type, key),
                keys.slot_waiters_key(queue, task_type, key))

    # ------------------------------------------------------------ slots

    def finished(self, tid: Any, lost: bool) -> None:
        """The task settled: its slot goes with its outcome (``lost``: no outcome is written; the
        slot expires with the lease it no longer has)."""
        slot = self.held.pop(tid, None)
        if slot is not None and not lost:
            self._release[tid] = slot

    async def settle(self, outcomes: list[Outcome], now: Optional[float] = None, cutoff: str = "") -> list[bytes]:
        """``Broker.settle`` with the release of the settled tasks' slots in the same round trip."""
        release = self._release
        slots = [release[o.id] for o in outcomes if o.id in release] if release else []
        missing = await _rdb.settle_with_release(self.redis, outcomes, slots, now, cutoff)
        for s in slots:
            release.pop(s.id, None)
        return missing

    def extend(self, client: Any, extended: Mapping[str, Iterable[str]], lease: int) -> None:
        """From the lease thread, right after the task leases: push the slots of the tasks whose
        lease was just extended (``extended``: IDs by queue) to Redis time + ``lease``."""
        slots = [*self.held.copy().values(), *self._release.copy().values()]
        if not slots:
            return
        ids = {tid for tids in extended.values() for tid in tids}
        _rdb.extend_slots(client, [s for s in slots if s.id in ids], lease)

    # ------------------------------------------------------------ forwarding

    async def forward_loop(self, queues: Iterable[str], stop: asyncio.Event) -> None:
        """Move due scheduled tasks of ``queues`` to pending every ``FORWARD_TICK`` until ``stop``."""
        calls = _rdb.forward_calls(list(queues), 1000)
        while not stop.is_set():
            try:
                await aexecute(self.redis, calls)
            except (RedisError, OSError) as exc:
                self.health.failed("forward", exc)
            try:
                await asyncio.wait_for(stop.wait(), FORWARD_TICK)
            except asyncio.TimeoutError:
                pass
