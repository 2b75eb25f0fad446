"""Consistency sweep of a queue's Redis data (the invariants of Asynq's key layout).

``check(redis, queue)`` reads one queue with SCAN/LRANGE/ZRANGE in pages and returns
the problems it finds, each naming the task and what is wrong:

* an ID in two containers at once (pending, active, scheduled, retry, archived,
  completed, a group), or listed twice in one list;
* an active ID without a lease, or a lease without an active ID (Asynq #1051/#1144);
* a listed ID without a task hash, or whose ``state`` field disagrees with its container;
* a task hash no container lists (dangling; retention-kept ``completed`` tasks are listed
  in the completed zset, so they do not count);
* a ``msg`` that does not decode.

It changes nothing. It is O(tasks in the queue): for tests, operators and the CLI, not for
hot paths.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from fastq import keys
from fastq._codec import decode_message
from fastq.errors import DecodeError

__all__ = ["check"]

PAGE = 1000


def _list(r: Any, key: str) -> list[str]:
    out: list[str] = []
    start = 0
    while True:
        page = r.lrange(key, start, start + PAGE - 1)
        out += [_text(x) for x in page]
        if len(page) < PAGE:
            return out
        start += PAGE


def _text(raw: bytes) -> str:
    """IDs and names read from Redis may hold any bytes (Go strings do): decode losslessly."""
    return raw.decode("utf-8", "surrogateescape")


def _zset(r: Any, key: Any) -> list[str]:
    return [_text(x) for x, _ in r.zscan_iter(key, count=PAGE)]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def check(r: Any, queue: str) -> list[str]:
    """Problems found in ``queue`` (an empty list when it is consistent)."""
    problems: list[str] = []
    where: dict[str, list[str]] = {}
    pending, active = _list(r, keys.pending_key(queue)), _list(r, keys.active_key(queue))
    for name, ids in (("pending", pending), ("active", active)):
        for tid, n in Counter(ids).items():
            if n > 1:
                problems.append(f"{tid}: listed {n} times in {name}")
    containers = {"pending": set(pending), "active": set(active)}
    for name in ("scheduled", "retry", "archived", "completed"):
        containers[name] = set(_zset(r, getattr(keys, f"{name}_key")(queue)))
    # groups and aggregation sets: every asynq:{q}:g:* zset (a group may be missing from the
    # groups set, and sets being aggregated are listed only in aggregation_sets)
    group_prefix = keys.group_key_prefix(queue)
    for raw_key in r.scan_iter(match=_glob_escape(group_prefix) + "*", count=PAGE):
        name = _text(raw_key)[len(group_prefix):]
        containers[f"group:{name}"] = set(_zset(r, raw_key))
    for name, members in containers.items():
        for tid in members:
            where.setdefault(tid, []).append(name)
    leases = set(_zset(r, keys.lease_key(queue)))
    for tid, found_in in where.items():
        if len(found_in) > 1:
            problems.append(f"{tid}: in several containers: {', '.join(sorted(found_in))}")
    for tid in containers["active"] - leases:
        problems.append(f"{tid}: active without a lease")
    for tid in leases - containers["active"]:
        problems.append(f"{tid}: lease without an active entry")

    expected_state = {"pending": "pending", "active": "active", "scheduled": "scheduled", "retry": "retry",
                      "archived": "archived", "completed": "completed"}
    prefix = keys.task_key_prefix(queue)
    seen_hashes: set[str] = set()
    for raw_key in r.scan_iter(match=_glob_escape(prefix) + "*", count=PAGE):
        tid = _text(raw_key)[len(prefix):]
        seen_hashes.add(tid)
        fields = r.hmget(raw_key, "state", "msg")
        state = _text(fields[0]) if fields[0] is not None else None
        places = where.get(tid)
        if not places:
            problems.append(f"{tid}: task hash with state {state!r} is in no container (dangling)")
            continue
        want = expected_state.get(places[0], "aggregating")  # group:<g> and group:<g>:<set id>
        if state != want:
            problems.append(f"{tid}: state {state!r} but listed in {places[0]}")
        if fields[1] is None:
            problems.append(f"{tid}: task hash has no msg")
        else:
            try:
                decode_message(fields[1])
            except DecodeError as exc:
                problems.append(f"{tid}: msg does not decode ({exc})")
    for tid in set(where) - seen_hashes:
        problems.append(f"{tid}: listed in {where[tid][0]} but its task hash is missing")
    return problems
