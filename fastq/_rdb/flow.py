"""Workflows in Redis: the link of a step to what follows it, and the scripts that follow it.

A workflow step is an ordinary Asynq task whose ID has an entry in its queue's links hash,
``asynq:{q}:fastq_flow`` (``keys.flow_links_key``; Go never reads it), holding its ``Link`` as JSON:

* chain: ``{"k": "chain", "id": <next step id>, "q": <its queue>, "rest": [[id, queue], ...]}``
  - the next step is created from its template (``keys.flow_step_key``) when this one succeeds;
  ``rest`` names the steps after it (their templates are dropped if this one is archived);
* chord member: ``{"k": "chord", "id": <callback id>, "q": <its queue>, "i": <index>,
  "eid": <error callback id or "">, "eq": <its queue>}`` - the chord record
  (``keys.chord_key``) counts it and holds its result.

The dequeue script returns the link with the claim (one EXISTS per batch when the queue has no
workflow steps) (``Claim.link``); the processor parses it
(``parse_link``: a field that does not parse archives the task with the reason) and settles the
step with ``Advance`` (success) or ``Archive(link=...)`` (failed for good): one script each
(``flow_done``, ``flow_fail``) that settles the task and follows the link atomically.

A template is a step's ``TaskMessage`` split around its payload, and its payload split around
its first argument (which the previous step's result fills): the scripts put the bytes together
(``fastq_flow_create`` in ``_lib.lua``) exactly as Go would encode the message.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from fastq import keys
from fastq._codec import TaskMessage, encode_message
from fastq._rdb import scripts as _s
from fastq._rdb.calls import Call, Steps, cmd, script
from fastq._rdb.outcome import Advance, Archive

__all__ = ["Link", "parse_link", "dump_link", "chord_links", "Template", "split_message", "advance_call", "fail_call",
           "NewTask", "start_calls", "sweep", "gone_call", "CHAIN", "CHORD"]

CHAIN, CHORD = "chain", "chord"


@dataclass(frozen=True, slots=True)
class Link:
    """What follows a workflow step (see the module docstring)."""

    kind: str  # CHAIN or CHORD
    id: str  # the next step (chain) or the chord's callback (chord)
    queue: str
    rest: tuple[tuple[str, str], ...] = ()  # chain: the steps after the next one
    index: int = 0  # chord: the member's position
    error_id: str = ""  # chord: the error callback ("" none)
    error_queue: str = ""


def dump_link(link: Link) -> str:
    if link.kind == CHAIN:
        return json.dumps({"k": CHAIN, "id": link.id, "q": link.queue, "rest": [list(r) for r in link.rest]},
                          separators=(",", ":"))
    return json.dumps({"k": CHORD, "id": link.id, "q": link.queue, "i": link.index, "eid": link.error_id,
                       "eq": link.error_queue}, separators=(",", ":"))


def chord_links(callback_id: str, queue: str, n: int, error_id: str = "", error_queue: str = "") -> list[str]:
    """``dump_link`` of members 0..n-1 of one chord (the same text but the index)."""
    head = dump_link(Link(CHORD, callback_id, queue, (), 0, error_id, error_queue))
    before, after = head.split('"i":0', 1)
    return [f'{before}"i":{i}{after}' for i in range(n)]


def parse_link(raw: bytes) -> Link:
    """A step's link as stored in the links hash; ``ValueError`` naming what is wrong."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"workflow link is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"workflow link is not a JSON object: {raw[:80]!r}")

    def text(name: str, allow_empty: bool = False) -> str:
        v = value.get(name)
        if not isinstance(v, str) or (not v and not allow_empty):
            raise ValueError(f"workflow link field {name!r} must be a non-empty string, got {v!r}")
        return v

    kind = value.get("k")
    if kind == CHAIN:
        rest = value.get("rest", [])
        if not isinstance(rest, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) and x for x in r) for r in rest):
            raise ValueError(f"workflow link field 'rest' must be a list of [id, queue] pairs, got {rest!r}")
        return Link(CHAIN, text("id"), text("q"), tuple((r[0], r[1]) for r in rest))
    if kind == CHORD:
        index = value.get("i")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"workflow link field 'i' must be an int >= 0, got {index!r}")
        error_id = text("eid", allow_empty=True)
        return Link(CHORD, text("id"), text("q"), (), index, error_id,
                    text("eq") if error_id else text("eq", allow_empty=True))
    raise ValueError(f"workflow link kind must be 'chain' or 'chord', got {kind!r}")


# ------------------------------------------------------------------ templates

@dataclass(frozen=True, slots=True)
class Template:
    """A step created later: its message around the payload (``mh`` field 1, ``mt`` fields 3 and
    up), its payload around the first argument, when it runs (``at``: "" at once, "+<s>" after a
    delay by the Redis clock, or Unix seconds) and its own link ("" none)."""

    mh: bytes
    mt: bytes
    ph: bytes
    pt: bytes
    at: str = ""
    link: str = ""

    def fields(self, prefix: str = "") -> list[Any]:
        return [prefix + "mh", self.mh, prefix + "mt", self.mt, prefix + "ph", self.ph, prefix + "pt", self.pt,
                prefix + "flow", self.link, prefix + "at", self.at]


def split_message(msg: TaskMessage) -> tuple[bytes, bytes]:
    """``(field 1, fields 3 and up)`` of ``msg``'s encoding: with field 2 (the payload) between
    them, the bytes of the whole message."""
    head = encode_message(TaskMessage(type=msg.type))
    rest = msg.copy()
    rest.type, rest.payload = "", b""
    return head, encode_message(rest)


# ------------------------------------------------------------------ settling steps

def _stats(q: str, date: str) -> list[str]:
    return [keys.processed_key(q, date), keys.processed_total_key(q)]


def advance_call(steps: Sequence[Advance], date: str, expire: int, cutoff: str) -> Call:
    """``flow_done`` for successful steps of one queue (one script call for all of them)."""
    q = steps[0].queue
    kkeys = [keys.active_key(q), keys.lease_key(q), keys.completed_key(q), keys.processed_key(q, date),
             keys.processed_total_key(q), keys.flow_links_key(q)]
    args: list[Any] = [expire, cutoff]
    for a in steps:
        link = a.link
        tid = a.id if isinstance(a.id, str) else a.id.decode("utf-8", "replace")
        link_key = (keys.flow_step_key if link.kind == CHAIN else keys.chord_key)(link.queue, link.id)
        kkeys += [keys.task_key(q, tid), link_key, keys.task_key(link.queue, link.id), keys.pending_key(link.queue),
                  keys.scheduled_key(link.queue), keys.flow_links_key(link.queue)]
        args += [a.id, a.token, a.expiry, encode_message(a.msg) if a.expiry else b"", a.unique_key,
                 b"" if a.result is None else b"1" + a.result, link.kind, link.id, link.index]
    return script(_s.FLOW_DONE, kkeys, args)


def fail_call(a: Archive, date: str, expire: int, now: int, cutoff: str, trim: tuple[int, int]) -> Call:
    """``flow_fail`` for one workflow step archived; ``trim``: the archive's age cutoff (Unix s)
    and its largest size."""
    q, link = a.queue, a.link
    assert link is not None
    tid = a.id if isinstance(a.id, str) else a.id.decode("utf-8", "replace")
    kkeys = [keys.active_key(q), keys.lease_key(q), keys.archived_key(q), keys.processed_key(q, date),
             keys.failed_key(q, date), keys.processed_total_key(q), keys.failed_total_key(q), keys.task_key(q, tid),
             keys.flow_links_key(q)]
    msg = a.msg if isinstance(a.msg, bytes) else encode_message(a.msg)
    error = "" if isinstance(a.msg, bytes) else a.msg.error_msg
    if link.kind == CHAIN:
        kkeys += _chain_keys(link)
        args = [expire, a.id, a.token, cutoff, now, msg, CHAIN, "", "", "", "", keys.task_key_prefix(q), *trim]
    else:
        kkeys += _chord_keys(link)
        reason = f"chord member {tid} failed: {error}" if error else f"chord member {tid} failed"
        args = [expire, a.id, a.token, cutoff, now, msg, CHORD, link.id, reason, link.error_id, json.dumps(tid),
                keys.task_key_prefix(q), *trim]
    return script(_s.FLOW_FAIL, kkeys, args)


def _chain_keys(link: Link) -> list[str]:
    """The templates of the steps after a chain step (``link``'s next step and the rest)."""
    return [keys.flow_step_key(link.queue, link.id)] + [keys.flow_step_key(qn, i) for i, qn in link.rest]


def _chord_keys(link: Link) -> list[str]:
    """What failing a member's chord writes (``fastq_chord_fail`` in ``_lib.lua``)."""
    eq = link.error_queue or link.queue
    return [keys.chord_key(link.queue, link.id), keys.task_key(link.queue, link.id), keys.archived_key(link.queue),
            keys.task_key(eq, link.error_id or link.id), keys.pending_key(eq), keys.scheduled_key(eq),
            keys.flow_links_key(eq)]


GONE_REASON = ("chord member {} is gone before it succeeded: deleted, revoked, or settled by a worker "
               "that does not follow workflow links")


def sweep(queue: str, page: int = 500) -> Steps[int]:
    """End the workflows of ``queue``'s steps whose task is gone while their link is still stored
    (``gone_call``): an HSCAN of the links hash, ``page`` entries a round trip, the EXISTS of each
    entry's task in the next, and one ``flow_gone`` call per such step in a third (only when there
    is one). The number of workflows ended."""
    links = keys.flow_links_key(queue)
    cursor: Any = 0
    ended = 0
    while True:
        ((cursor, entries),) = yield [cmd("hscan", links, cursor, count=page)]
        if entries:
            ids = [k.decode("utf-8", "replace") if isinstance(k, bytes) else k for k in entries]
            found = yield [cmd("exists", keys.task_key(queue, tid)) for tid in ids]
            now = int(time.time())
            gone = [gone_call(queue, tid, raw, now)
                    for tid, raw, there in zip(ids, entries.values(), found, strict=True) if not there]
            if gone:
                ended += sum((yield gone))
        if int(cursor) == 0:
            return ended


def gone_call(queue: str, tid: str, raw: bytes, now: int) -> Call:
    """``flow_gone`` for a step of ``queue`` whose task is gone and whose stored link is ``raw``:
    its chain's later templates are deleted, its chord fails (a link that does not parse is only
    dropped)."""
    kkeys = [keys.task_key(queue, tid), keys.flow_links_key(queue)]
    try:
        link: Optional[Link] = parse_link(raw)
    except ValueError:
        link = None
    if link is None:
        return script(_s.FLOW_GONE, kkeys, [tid, raw, "", now, "", "", "", ""])
    if link.kind == CHAIN:
        return script(_s.FLOW_GONE, kkeys + _chain_keys(link), [tid, raw, CHAIN, now, "", "", "", ""])
    return script(_s.FLOW_GONE, kkeys + _chord_keys(link),
                  [tid, raw, CHORD, now, link.id, GONE_REASON.format(tid), link.error_id, json.dumps(tid)])


# ------------------------------------------------------------------ starting a workflow

@dataclass(frozen=True, slots=True)
class NewTask:
    """A task written when the workflow starts: its message, when it runs, its link."""

    msg: TaskMessage
    at: str = ""
    link: str = ""


def start_calls(tasks: Sequence[NewTask], templates: Sequence[tuple[str, str, Template]] = (),
                chord: Optional[tuple[str, str, list[Any]]] = None, chunk: int = 1000) -> list[Call]:
    """The ``flow_start`` calls that write a workflow: the first holds the chord record
    (``(queue, callback id, fields)``) and the templates (``(queue, id, template)``), the tasks
    follow ``chunk`` to a call. Each call replies ``[]`` or ``[position of a key that exists]``."""
    calls = []
    first = True
    for start in range(0, max(len(tasks), 1), chunk):
        kkeys: list[str] = []
        args: list[Any] = []
        if first and chord is not None:
            q, cid, fields = chord
            kkeys.append(keys.chord_key(q, cid))
            args += ["1", len(templates), len(fields), *fields]
        else:
            args += ["0", len(templates) if first else 0]
        if first:
            for q, tid, t in templates:
                kkeys.append(keys.flow_step_key(q, tid))
                args += [t.mh, t.mt, t.ph, t.pt, t.link, t.at]
        for new in tasks[start:start + chunk]:
            m = new.msg
            kkeys += [keys.task_key(m.queue, m.id), keys.pending_key(m.queue), keys.scheduled_key(m.queue),
                      keys.flow_links_key(m.queue)]
            args += [m.id, encode_message(m), new.at, new.link]
        calls.append(script(_s.FLOW_START, kkeys, args))
        first = False
    return calls
