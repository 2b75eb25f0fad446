"""Group aggregation (Asynq's ``GroupAggregator``) and the reclaim of stale aggregation sets.

Tasks enqueued with ``group="g"`` wait in ``asynq:{q}:g:g``. A worker whose
``WorkerConfig.group_aggregator`` is set checks every group of its queues every
``min(7 s, group_grace_period, group_max_delay)``; a ready group (``group_max_size``
tasks, oldest task older than ``group_max_delay``, or nothing added for
``group_grace_period``) has its oldest tasks moved into a new aggregation set
``asynq:{q}:g:g:<setID>`` by one atomic script, so the set belongs to the worker that
made it and no two workers ever aggregate the same task. The worker then reads the
set (in pages), calls ``group_aggregator(group, tasks)``, and in one more script
enqueues the returned task to the same queue and deletes the set and its tasks.

A set has a deadline (2 minutes, as Asynq). If its worker dies, or the aggregator
raises, hangs or returns something unusable, the set stays until the deadline and
then every worker (aggregator or not) puts its tasks back into their group, where
they are aggregated again: a failing aggregator is retried every 2 minutes, with
nothing lost.

Differences from Go Asynq, all invisible to its tools:

* A ready group is checked again at once in the same run, so a burst of 1,000 tasks
  with ``group_max_size=10`` is aggregated in one run, not 100 ticks of 7 s.
* The check interval also honours ``group_max_delay`` (Go: min(7 s, grace) only).
* Enqueue and delete are one script that first checks the set is still this
  worker's; Go enqueues, then deletes, so a set reclaimed in between is aggregated twice.
* Reclaiming adds the group name back to ``asynq:{q}:groups`` (Go does not, and such a
  group waits until another task joins it); a group found empty is removed from it.
* Groups that have tasks but are missing from ``asynq:{q}:groups`` are listed again, so
  they are aggregated. Go's recoverer leaves them so (it puts a stale set's tasks back into
  the group zset, but not the name into the groups set). Two ways, both in every worker
  with a ``group_aggregator``:

  - Watching: every check interval one ZRANGE of ``asynq:{q}:aggregation_sets`` (small:
    the sets being aggregated; over ``TRACK_MAX_SETS`` the queue is left to the sweep).
    For each set that vanished since the last look, ``aggregation_relist.lua`` lists its
    group again if the group has tasks: O(1) per set, and the group is aggregated within
    two check intervals of Go's reclaim.
  - Sweeping, for what watching cannot see (left before the worker started, or by hand):
    at start and every ``DISCOVERY_INTERVAL`` (5 min), a full SCAN cycle over
    ``asynq:{q}:g:*``, ``DISCOVERY_SCAN_COUNT`` (1000) keys per step, each step a script
    (``aggregation_discover.lua``) that tells group zsets from aggregation sets and lists
    the groups. SCAN costs O(all keys of the database) per cycle whatever the MATCH
    (measured: about 1-2 s of Redis time per million keys), so a sweep waits between steps
    to keep Redis busy at most ``DISCOVERY_DUTY`` (1 %) of the time: a million keys take
    about 2 minutes. On a standalone Redis one sweep serves all the worker's queues; on
    Redis Cluster each queue is swept on the node owning its slot (where all its keys are),
    so queues sharing a node scan it once each.
* Group names are bytes throughout (keys, scripts): a name that is not UTF-8 works and is
  given to ``group_aggregator`` as a str with surrogate escapes
  (``group.encode("utf-8", "surrogateescape")`` gives the bytes back).
* Members whose message cannot be decoded are archived as ``fastq:undecodable`` (with
  the original bytes) instead of failing the whole set.
* The aggregated task may come with enqueue options (``(task, {"max_retry": 3})``); a
  ``queue`` other than the group's is an error (Go silently forces the group's queue).
  Like Go's, it has no payload limit: ``Client(max_payload_bytes=...)`` guards producers, and
  a group's tasks, each within that limit, may add up to more.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Optional, Sequence, Union

from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from fastq import keys
from fastq._codec import decode_message
from fastq._rdb import aggregation as rdb
from fastq._rdb.aggregation import DONE, ID_CONFLICT, NOT_OURS, GroupRules, group_name
from fastq.errors import DecodeError, InvalidOptionError
from fastq.mux import is_async_handler
from fastq.options import EnqueuePlan, plan_enqueue
from fastq.server.config import WorkerConfig
from fastq.server.health import noop_health
from fastq.server.maintenance import sleep_until_set
from fastq.server.processor import printable_id, undecodable_message
from fastq.task import Task

__all__ = ["Aggregator", "aggregation_loop", "check_interval", "reclaim_stale_sets"]

log = logging.getLogger("fastq.aggregator")

SET_TIMEOUT = 120  # seconds until an aggregation set may be reclaimed (Asynq: 2 min)
MAX_RUNS_IN_FLIGHT = 3  # aggregation runs at once (Asynq: maxConcurrentAggregationChecks)
DEFAULT_CHECK_INTERVAL = 7.0  # Asynq: defaultAggregationCheckInterval
MAX_SETS_PER_GROUP = 100  # sets made from one group in one run, so other groups get their turn
DISCOVERY_INTERVAL = 300.0  # seconds between sweeps for groups missing from asynq:{q}:groups (+-10 %)
DISCOVERY_DUTY = 0.01  # a sweep waits between steps so that it keeps Redis busy <= 1 % of the time
TRACK_MAX_SETS = 10_000  # aggregation sets watched per queue (more: left to the sweep)


def check_interval(cfg: WorkerConfig) -> float:
    """Seconds between aggregation runs: min(7 s, grace period, max delay if set)."""
    interval = min(DEFAULT_CHECK_INTERVAL, cfg.group_grace_period)
    if cfg.group_max_delay:
        interval = min(interval, cfg.group_max_delay)
    return interval


def _label(name: bytes) -> str:
    """A group name for ``group_aggregator`` and logs: lossless for any bytes (surrogate escapes)."""
    return name.decode("utf-8", "surrogateescape")


# ----------------------------------------------------------------- stale sets

async def reclaim_stale_sets(redis: Any, queues: Sequence[str]) -> int:
    """Put the tasks of aggregation sets past their deadline back into their groups.

    One round trip for all queues while nothing is stale; returns the number of sets reclaimed.
    """
    total = await rdb.reclaim_stale_sets(redis, queues)
    if total:
        log.warning("reclaimed %d stale aggregation set(s): their tasks are back in their groups", total)
    return total


async def _reclaim_loop(redis: Any, cfg: WorkerConfig, stop: asyncio.Event, health: Any = None) -> None:
    health = health or noop_health()
    while not stop.is_set():
        try:
            await reclaim_stale_sets(redis, list(cfg.queues))
        except (RedisError, OSError) as exc:
            health.failed("aggregation-reclaim", exc)
        await sleep_until_set(stop, cfg.recover_interval)


# ----------------------------------------------------------------- aggregation

class Aggregator:
    """Checks the groups of ``cfg.queues`` and aggregates the ready ones with ``cfg.group_aggregator``."""

    def __init__(self, redis: Any, cfg: WorkerConfig, health: Any = None) -> None:
        self.health = health or noop_health()
        if cfg.group_aggregator is None:
            raise InvalidOptionError("group_aggregator is not set")
        self.redis = redis
        self.cfg = cfg
        self.queues = list(cfg.queues)
        self._fn = cfg.group_aggregator
        self._is_async = is_async_handler(cfg.group_aggregator)
        self.aggregated = 0  # sets finished by this aggregator (tests and logs)
        self._sets: dict[str, Optional[set[bytes]]] = {}  # per queue: aggregation sets seen last tick
        self._rules = GroupRules(cfg.group_max_size, cfg.group_max_delay, cfg.group_grace_period, SET_TIMEOUT)

    async def run(self, stop: asyncio.Event) -> None:
        """One run at start, then one every ``check_interval``, at most 3 in flight, until ``stop``.

        Besides, groups missing from ``asynq:{q}:groups`` are listed again: those of aggregation
        sets that vanish (checked every ``check_interval``), and any found by a sweep at start
        and every ``DISCOVERY_INTERVAL``."""
        interval = check_interval(self.cfg)
        runs: set[asyncio.Task[None]] = set()
        helpers = [asyncio.create_task(self._discovery_loop(stop), name="fastq-group-discovery"),
                   asyncio.create_task(self._track_loop(stop, interval), name="fastq-group-track")]
        try:
            while not stop.is_set():
                if len(runs) >= MAX_RUNS_IN_FLIGHT:
                    log.warning("%d aggregation runs in flight (slow group_aggregator?); skipping this one",
                                len(runs))
                else:
                    run = asyncio.create_task(self._logged_run(stop), name="fastq-aggregate")
                    runs.add(run)
                    run.add_done_callback(runs.discard)
                await sleep_until_set(stop, interval)
            if runs:  # let them finish the sets they made (each checks stop between groups)
                await asyncio.wait(set(runs))
        finally:
            for run in runs:
                run.cancel()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _discovery_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            found: dict[str, list[bytes]] = {}
            try:
                found = await rdb.discover_groups(self.redis, self.queues, duty=DISCOVERY_DUTY)
            except (RedisError, OSError) as exc:
                self._failed("aggregation-discovery", exc)
            except Exception:  # noqa: BLE001 - a bug here must not end the sweeps (nor aggregation)
                log.exception("sweeping for groups missing from asynq:{q}:groups failed")
            for q, names in found.items():
                _log_relisted(q, names, "found by a sweep")
            await sleep_until_set(stop, DISCOVERY_INTERVAL * random.uniform(0.9, 1.1))

    async def _track_loop(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            for q in self.queues:
                try:
                    await self._track(q)
                except (RedisError, OSError) as exc:  # the last look is kept: compared again next time
                    self._failed("aggregation-track", exc)
                except Exception:  # noqa: BLE001 - a bug here must not end the watching (nor aggregation)
                    log.exception("watching the aggregation sets of queue %r failed", q)
            await sleep_until_set(stop, interval)

    async def _track(self, q: str) -> None:
        """Compare ``asynq:{q}:aggregation_sets`` with the last look; relist the groups of vanished sets."""
        now = await rdb.list_aggregation_sets(self.redis, q, TRACK_MAX_SETS)
        before = self._sets.get(q)
        current = None if now is None else set(now)
        if before and current is not None and before - current:
            names = await rdb.relist_groups(self.redis, q, sorted(before - current))
            if names:
                _log_relisted(q, names, "their aggregation sets were reclaimed by Go Asynq?")
        self._sets[q] = current  # only once the vanished sets were handled

    def _failed(self, operation: str, exc: BaseException) -> None:
        if isinstance(exc, ResponseError) and not (isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM")):
            # an answer, not an outage (a full Redis is the health state's business): try again later
            log.warning("%s failed: %s", operation, exc)
        else:
            self.health.failed(operation, exc)

    async def _logged_run(self, stop: asyncio.Event) -> None:
        try:
            await self.run_once(stop)
        except (RedisError, OSError) as exc:
            self.health.failed("aggregation", exc)

    async def run_once(self, stop: Optional[asyncio.Event] = None) -> int:
        """Check every group of every queue once (re-checking groups that were ready); return sets made."""
        made = 0
        for q in self.queues:
            groups = await rdb.list_groups(self.redis, q)
            for _ in range(MAX_SETS_PER_GROUP):
                if not groups or (stop is not None and stop.is_set()):
                    break
                ready = await rdb.make_ready_sets(self.redis, q, groups, self._rules)
                made += len(ready)
                done = [group for group, set_id in ready if await self.aggregate_set(q, group, set_id)]
                # Only a max-size set leaves tasks behind that may be ready at once; a group whose
                # set failed waits for the next run.
                groups = done if self.cfg.group_max_size else []
        return made

    async def aggregate_set(self, q: str, group: str | bytes, set_id: str) -> bool:
        """Aggregate one set this worker made; True when its task was enqueued and the set deleted.

        On any failure the set is left as it is: after its deadline it is reclaimed into the group.
        """
        name = group_name(group)
        group = _label(name)
        set_key = rdb.set_key(q, name, set_id)
        where = f"queue={q!r} group={group!r} set={set_id}"
        started = time.monotonic()
        try:
            members = await rdb.read_set(self.redis, q, set_key)
        except (RedisError, OSError) as exc:
            log.warning("reading aggregation set failed (%s): %s; it is reclaimed after %ds", where, exc, SET_TIMEOUT)
            return False
        if members is None:
            log.warning("aggregation set %s was reclaimed before it was read", where)
            return False
        tasks, bad = _decode(q, members)
        plan = None
        if tasks:
            try:
                result = await asyncio.wait_for(self._call(group, tasks), SET_TIMEOUT - (time.monotonic() - started))
                plan = aggregated_plan(q, result)
            except asyncio.TimeoutError:
                log.error("group_aggregator did not return within %ds (%s); the tasks go back to the group",
                          SET_TIMEOUT, where)
                return False
            except Exception:
                log.exception("group_aggregator failed (%s, %d tasks); the set is kept and its tasks go back "
                              "to the group after %ds", where, len(tasks), SET_TIMEOUT)
                return False
        try:
            reply = await rdb.finish_aggregation(self.redis, q, set_key, plan, bad)
        except (RedisError, OSError) as exc:
            log.warning("enqueueing the aggregated task failed (%s): %s; the set is reclaimed after %ds",
                        where, exc, SET_TIMEOUT)
            return False
        if reply == DONE:
            self.aggregated += 1
            log.debug("aggregated %d task(s) (%s) into task %s", len(tasks), where, plan.msg.id if plan else "-")
            return True
        if reply == NOT_OURS or plan is None:
            log.warning("aggregation set %s passed its deadline and was reclaimed; its tasks are aggregated "
                        "again, the task aggregated here was not enqueued", where)
        elif reply == ID_CONFLICT:
            log.error("aggregated task ID %r already exists (%s); the set goes back to the group after %ds",
                      plan.msg.id, where, SET_TIMEOUT)
        else:
            log.error("aggregated task is a duplicate (unique key %r held; %s); the set goes back to the group "
                      "after %ds", plan.msg.unique_key, where, SET_TIMEOUT)
        return False

    async def _call(self, group: str, tasks: list[Task]) -> Any:
        if self._is_async:
            return await self._fn(group, tasks)
        result = await asyncio.to_thread(self._fn, group, tasks)
        if asyncio.iscoroutine(result):
            result = await result
        return result


def _log_relisted(q: str, names: list[bytes], why: str) -> None:
    log.warning("queue %r: %d group(s) with tasks were missing from %s (%s); listed again to be "
                "aggregated: %s", q, len(names), keys.groups_key(q), why,
                ", ".join(repr(_label(n)) for n in names[:20]) + (", ..." if len(names) > 20 else ""))


def _decode(q: str, members: list[tuple[bytes, bytes]]) -> tuple[list[Task], list[tuple[Union[str, bytes], bytes]]]:
    """Tasks to aggregate, and (ID, encoded archive message) for members whose bytes are unusable:
    an ID that is not UTF-8 (kept as bytes: it is the key), or a message that does not decode or
    does not match."""
    tasks: list[Task] = []
    bad: list[tuple[Union[str, bytes], bytes]] = []
    for raw_id, raw in members:
        tid: Union[str, bytes]
        try:
            tid = raw_id.decode()
        except UnicodeDecodeError:
            tid, reason = raw_id, "task ID is not valid UTF-8"
        else:
            try:
                msg = decode_message(raw)
                reason = "" if msg.type and msg.id == tid else f"message has type {msg.type!r} and ID {msg.id!r}"
            except DecodeError as exc:
                reason = f"undecodable message: {exc}"
        if reason:
            log.error("task %s in queue %s archived instead of aggregated: %s", printable_id(tid), q, reason)
            bad.append((tid, undecodable_message(q, tid, raw or b"", reason, time.time())))
        else:
            tasks.append(Task._trusted(msg.type, msg.payload, dict(msg.headers or {})))
    return tasks, bad


def aggregated_plan(q: str, result: Any) -> EnqueuePlan:
    """Validate what the aggregator returned: a ``Task`` or ``(Task, options)`` for queue ``q``.

    Raises ``TypeError`` for another shape or an unknown option, ``InvalidOptionError`` for a
    bad option value (also a ``queue`` other than ``q``). No payload limit (as Go): the
    client's ``max_payload_bytes`` guards producers, and members within it may add up to more.
    """
    options: Any = {}
    if isinstance(result, tuple) and len(result) == 2:
        result, options = result
        if not isinstance(options, dict):
            raise TypeError(f"group_aggregator returned options of type {type(options).__name__}, not a dict")
    if not isinstance(result, Task):
        raise TypeError(f"group_aggregator must return a fastq.Task or (Task, options dict), "
                        f"not {type(result).__name__}")
    options = dict(options)
    queue = options.pop("queue", q)
    if queue != q:
        raise InvalidOptionError(f"option 'queue': an aggregated task is enqueued to its group's queue {q!r}, "
                                 f"not {queue!r}")
    return plan_enqueue(result, {**options, "queue": q})


# ----------------------------------------------------------------- the worker's loop

async def aggregation_loop(broker: Any, cfg: WorkerConfig, stop: asyncio.Event, health: Any = None) -> None:
    """Run by every worker until ``stop``: reclaim stale sets (every ``recover_interval``, as Asynq's
    recoverer does in every server) and, when ``cfg.group_aggregator`` is set, aggregate groups."""
    redis = broker.redis
    loops = [_reclaim_loop(redis, cfg, stop, health)]
    if cfg.group_aggregator is not None:
        loops.append(Aggregator(redis, cfg, health).run(stop))
    await asyncio.gather(*loops)
