"""Workflows of App tasks: signatures, chains, groups and chords.

``add.s(1, 2)`` is a ``Signature``: a task with its arguments and options, not sent yet.
``chain(a, b, c)`` runs ``a``, then ``b`` with ``a``'s result as its first argument, then ``c``
with ``b``'s; ``group(...)`` runs its members side by side; ``chord(group, callback)`` runs the
callback with the list of the members' results once every member succeeded.

Crash safety comes from Redis, not from the worker: the steps created later are written when
the workflow is enqueued, as templates (``fastq._rdb.flow``), and the script that acknowledges a
step creates its successor (or counts it in its chord) in the same call. A worker killed
between a step's end and its acknowledgement leaves the step to be run again (at least once,
as any task); nothing is lost and no step is created twice.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

from fastq import keys
from fastq._rdb.calls import Call, aexecute, cmd, execute
from fastq._rdb.flow import CHAIN, Link, NewTask, Template, chord_links, dump_link, split_message, start_calls
from fastq.app.payload import DEFAULT_RESULT_RETENTION
from fastq.app.ref import _timeout
from fastq.errors import TaskIDConflictError
from fastq.options import ENQUEUE, GROUP, EnqueuePlan, check_option_names, plan_enqueue, plan_many
from fastq.task import Task

if TYPE_CHECKING:
    from fastq._rdb.settled import Settled
    from fastq.app.app import App
    from fastq.app.ref import TaskRef
    from fastq.app.task import AppTask

__all__ = ["Signature", "Chain", "Group", "Chord", "chain", "group", "chord", "ChainRef", "GroupRef", "ChordRef"]

# Options a workflow step cannot have: uniqueness and aggregation groups would let the script
# that creates a step skip or hold it, breaking the workflow.
_REFUSED = ("unique", "group")


class Signature:
    """A call of an App task not sent yet: ``task.s(*args, **kwargs)``; ``.set(**options)``
    returns a copy with enqueue options (``queue``, ``max_retry``, ``timeout``, ``retention``,
    ``process_in``, ...). In a chain or as a chord's callback, the result of what came before is
    passed as its first positional argument, before ``args``."""

    __slots__ = ("task", "args", "kwargs", "options")

    def __init__(self, task: AppTask[Any, Any], args: Sequence[Any] = (), kwargs: Optional[Mapping[str, Any]] = None,
                 options: Optional[Mapping[str, Any]] = None) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        check_option_names(self.options)
        for name in _REFUSED:
            if self.options.get(name) is not None:
                raise ValueError(f"{task.name}: option {name!r} cannot be used in a workflow step")

    def set(self, **options: Any) -> Signature:
        """A copy with these enqueue options merged over this one's."""
        return Signature(self.task, self.args, self.kwargs, {**self.options, **options})

    def on_error(self, errback: Signature) -> Chord:
        raise TypeError("on_error() belongs to a chord: fastq.chord(group, callback).on_error(errback)")

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        opts = f".set({', '.join(f'{k}={v!r}' for k, v in self.options.items())})" if self.options else ""
        return f"{self.task.name}.s({', '.join(parts)}){opts}"

    # ------------------------------------------------------------ building

    def _options(self) -> dict[str, Any]:
        opts = {**self.task.default_options, **self.options}
        if not opts.get("retention"):  # a step's result must outlive it: the next step, or a waiter, reads it
            opts["retention"] = DEFAULT_RESULT_RETENTION
        for name in _REFUSED:
            if opts.get(name) is not None:
                raise ValueError(f"{self.task.name}: option {name!r} cannot be used in a workflow step")
        return opts

    def _template(self, now: float) -> tuple[str, str, Template]:
        """``(queue, id, template)`` of a step created later with the result before it."""
        head, tail = self.task.signature.dump_args_around_first(self.args, self.kwargs)
        plan = plan_enqueue(Task._trusted(self.task.name, b"", {}), self._options(), now)
        mh, mt = split_message(plan.msg)
        return plan.msg.queue, plan.msg.id, Template(mh, mt, head, tail, _at(plan))

    def _call(self, before: tuple[Any, ...] = ()) -> Task:
        """The task of this call, ``before`` as its first arguments."""
        return Task._trusted(self.task.name, self.task.signature.dump_args((*before, *self.args), self.kwargs), {})


def _at(plan: EnqueuePlan) -> str:
    """When a step runs, as the scripts take it: "" at once, "+<s>" after a delay by the Redis
    clock, or Unix seconds."""
    if plan.kind == GROUP:  # pragma: no cover - refused by Signature._options
        raise ValueError("aggregation groups are not workflow steps")
    if plan.kind == ENQUEUE:
        return ""
    return f"+{plan.process_in}" if plan.process_in is not None else str(plan.process_at)


def _new_tasks(sigs: Sequence[Signature], now: float, links: Optional[Sequence[str]] = None) -> list[NewTask]:
    """The tasks written at once (their arguments all given); runs of one task with the same
    options are planned together (``plan_many``: the options checked once), as a large group
    usually is."""
    out: list[NewTask] = []
    i = 0
    while i < len(sigs):
        first = sigs[i]
        j = i + 1
        while j < len(sigs) and sigs[j].task is first.task and sigs[j].options == first.options:
            j += 1
        for k, plan in enumerate(plan_many([s._call() for s in sigs[i:j]], first._options(), now), i):
            out.append(NewTask(plan.msg, _at(plan), links[k] if links else ""))
        i = j
    return out


def _eager(sig: Signature, before: tuple[Any, ...] = ()) -> TaskRef:
    """Run ``sig`` in-process (``with app.eager():``), ``before`` as its first arguments."""
    from fastq.app.eager import run_eager

    return run_eager(sig.task, sig._call(before), sig._options())


async def _aeager(sig: Signature, before: tuple[Any, ...] = ()) -> TaskRef:
    from fastq.app.eager import arun_eager

    return await arun_eager(sig.task, sig._call(before), sig._options())


def _signatures(items: Iterable[Any], what: str) -> list[Signature]:
    out = list(items)
    for i, item in enumerate(out):
        if not isinstance(item, Signature):
            raise TypeError(f"{what}: item {i} is a {type(item).__name__}, not a task signature (task.s(...))")
    return out


def _app_of(sigs: Sequence[Signature]) -> App:
    app = sigs[0].task.app
    for s in sigs:
        if s.task.app is not app:
            raise ValueError(f"a workflow's tasks must belong to one App ({s.task.name!r} does not)")
    return app


def _registered(app: App, calls: list[Call], queues: Iterable[str]) -> list[Call]:
    """``calls`` after adding the workflow's queues to ``asynq:queues`` (as Go's client does).
    On Redis Cluster the queues must be one (a workflow's scripts touch one hash slot)."""
    from fastq.redis.cluster import is_cluster

    names = sorted(set(queues))
    if len(names) > 1 and is_cluster(app.client.redis):
        raise ValueError(f"on Redis Cluster a workflow's steps must share one queue (its scripts touch one "
                         f"hash slot); got {', '.join(names)}")
    return [cmd("sadd", keys.ALL_QUEUES, *names), *calls]


def _chain_link(after: Sequence[tuple[str, str, Template]]) -> str:
    """The link of a chain step followed by the steps ``after`` (``(queue, id, template)``): the
    next one, and the ones after it (dropped if this step fails); "" for the last step."""
    if not after:
        return ""
    return dump_link(Link(CHAIN, after[0][1], after[0][0], tuple((tid, q) for q, tid, _ in after[1:])))


def _check_replies(calls: list[Call], replies: list[Any]) -> None:
    """A ``flow_start`` call that found a key in use wrote nothing: ``TaskIDConflictError``."""
    for call, reply in zip(calls[1:], replies[1:], strict=True):
        if reply:
            key = call.args[0][int(reply[0]) - 1]
            tid = keys.task_id_of_key(key) or key.rsplit(":", 1)[-1]
            raise TaskIDConflictError([tid], key.split("{", 1)[1].split("}", 1)[0])


def _write(app: App, calls: list[Call]) -> None:
    _check_replies(calls, execute(app.client.redis, calls))


async def _awrite(app: App, calls: list[Call]) -> None:
    _check_replies(calls, await aexecute(app.async_client().redis, calls))


class Chain:
    """Steps run one after the other, each given the previous one's result (``fastq.chain``)."""

    def __init__(self, steps: Sequence[Signature]) -> None:
        if not steps:
            raise ValueError("chain() needs at least one task signature")
        self.steps = list(steps)

    def _plan(self) -> tuple[App, list[Any], ChainRef]:
        app = _app_of(self.steps)
        now = time.time()
        templates = [s._template(now) for s in self.steps[1:]]
        linked = [(q, tid, dataclasses.replace(t, link=_chain_link(templates[i + 1:])))
                  for i, (q, tid, t) in enumerate(templates)]
        (first,) = _new_tasks(self.steps[:1], now, [_chain_link(templates)])
        calls = _registered(app, start_calls([first], linked), [first.msg.queue] + [q for q, _, _ in linked])
        refs = [self.steps[0].task.ref(first.msg.id, queue=first.msg.queue)]
        refs += [s.task.ref(tid, queue=q) for s, (q, tid, _) in zip(self.steps[1:], templates, strict=True)]
        return app, calls, ChainRef(refs)

    def enqueue(self) -> ChainRef:
        """Write the chain (its first step runs now); its ``ChainRef`` waits for the last step.
        In ``with app.eager():`` the steps run here, in order (an exception propagates)."""
        if _app_of(self.steps).is_eager:
            refs = [_eager(self.steps[0])]
            for sig in self.steps[1:]:
                refs.append(_eager(sig, (refs[-1].value,)))
            return ChainRef(refs)
        app, calls, ref = self._plan()
        _write(app, calls)
        return ref

    async def aenqueue(self) -> ChainRef:
        if _app_of(self.steps).is_eager:
            refs = [await _aeager(self.steps[0])]
            for sig in self.steps[1:]:
                refs.append(await _aeager(sig, (refs[-1].value,)))
            return ChainRef(refs)
        app, calls, ref = self._plan()
        await _awrite(app, calls)
        return ref

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.steps))})"


class Group:
    """Members run side by side (``fastq.group``); ``.result()`` is their results, in order."""

    def __init__(self, members: Sequence[Signature]) -> None:
        if not members:
            raise ValueError("group() needs at least one task signature")
        self.members = list(members)

    def _plan(self) -> tuple[App, list[Any], GroupRef]:
        app = _app_of(self.members)
        now = time.time()
        tasks = _new_tasks(self.members, now)
        refs = [m.task.ref(t.msg.id, queue=t.msg.queue) for m, t in zip(self.members, tasks, strict=True)]
        calls = _registered(app, start_calls(tasks), [t.msg.queue for t in tasks])
        return app, calls, GroupRef(str(uuid.uuid4()), refs)

    def enqueue(self) -> GroupRef:
        """Write the members (they run now); the ``GroupRef`` waits for their results."""
        if _app_of(self.members).is_eager:
            return GroupRef(str(uuid.uuid4()), [_eager(m) for m in self.members])
        app, calls, ref = self._plan()
        _write(app, calls)
        return ref

    async def aenqueue(self) -> GroupRef:
        if _app_of(self.members).is_eager:
            return GroupRef(str(uuid.uuid4()), [await _aeager(m) for m in self.members])
        app, calls, ref = self._plan()
        await _awrite(app, calls)
        return ref

    def __repr__(self) -> str:
        return f"group([{', '.join(map(repr, self.members))}])"


class Chord:
    """A group and a callback run with the list of the members' results once all succeeded
    (``fastq.chord``). If a member is archived the chord fails: the callback is archived with
    the reason and the error callback (``.on_error(sig)``), if any, runs with the failed
    member's task ID as its first argument."""

    def __init__(self, header: Union[Group, Iterable[Signature]], body: Signature,
                 errback: Optional[Signature] = None) -> None:
        self.header = header if isinstance(header, Group) else Group(_signatures(header, "chord()"))
        if not isinstance(body, Signature):
            raise TypeError(f"chord(): the callback is a {type(body).__name__}, not a task signature (task.s(...))")
        if errback is not None and not isinstance(errback, Signature):
            raise TypeError(f"on_error(): expected a task signature (task.s(...)), got {type(errback).__name__}")
        self.body = body
        self.errback = errback

    def on_error(self, errback: Signature) -> Chord:
        """The same chord with an error callback, run once if a member is archived."""
        return Chord(self.header, self.body, errback)

    def _plan(self) -> tuple[App, list[Any], ChordRef]:
        members = self.header.members
        app = _app_of([*members, self.body] + ([self.errback] if self.errback else []))
        now = time.time()
        cq, cid, body = self.body._template(now)
        fields = ["n", len(members), "done", 0, "state", "waiting", *body.fields()]
        eid = eq = ""
        if self.errback is not None:
            eq, eid, err = self.errback._template(now)
            fields += err.fields("e")
        tasks = _new_tasks(members, now, chord_links(cid, cq, len(members), eid, eq))
        refs = [m.task.ref(t.msg.id, queue=t.msg.queue) for m, t in zip(members, tasks, strict=True)]
        callback = self.body.task.ref(cid, queue=cq)
        calls = _registered(app, start_calls(tasks, (), (cq, cid, fields)),
                            [cq] + ([eq] if eq else []) + [t.msg.queue for t in tasks])
        return app, calls, ChordRef(callback, GroupRef(cid, refs))

    def enqueue(self) -> ChordRef:
        """Write the chord: its members run now; its ``ChordRef`` waits for the callback. In
        ``with app.eager():`` the members then the callback run here (an exception propagates)."""
        if _app_of([*self.header.members, self.body]).is_eager:
            members = GroupRef(str(uuid.uuid4()), [_eager(m) for m in self.header.members])
            return ChordRef(_eager(self.body, ([m.value for m in members.members],)), members)
        app, calls, ref = self._plan()
        _write(app, calls)
        return ref

    async def aenqueue(self) -> ChordRef:
        if _app_of([*self.header.members, self.body]).is_eager:
            members = GroupRef(str(uuid.uuid4()), [await _aeager(m) for m in self.header.members])
            return ChordRef(await _aeager(self.body, ([m.value for m in members.members],)), members)
        app, calls, ref = self._plan()
        await _awrite(app, calls)
        return ref

    def __repr__(self) -> str:
        err = f".on_error({self.errback!r})" if self.errback else ""
        return f"chord({self.header!r}, {self.body!r}){err}"


def chain(*steps: Signature) -> Chain:
    """``chain(a.s(...), b.s(...), ...)``: run the steps in order, each given the previous
    step's result as its first argument."""
    return Chain(_signatures(steps, "chain()"))


def group(*members: Any) -> Group:
    """``group(sig, sig, ...)`` or ``group(iterable of signatures)``: run them side by side."""
    if len(members) == 1 and not isinstance(members[0], Signature):
        return Group(_signatures(members[0], "group()"))
    return Group(_signatures(members, "group()"))


def chord(header: Union[Group, Iterable[Signature]], callback: Signature) -> Chord:
    """``chord(group(...), callback.s(...))``: run the callback with the list of results."""
    return Chord(header, callback)


# ------------------------------------------------------------------ references

def _any_archived(got: dict[int, Settled]) -> bool:
    return any(s.state == "archived" for s in got.values())


class ChainRef:
    """What ``chain(...).enqueue()`` returns: ``.id`` (the last step's task ID), ``.steps`` (a
    ``TaskRef`` per step) and ``result(timeout)``, the last step's return value."""

    def __init__(self, steps: list[TaskRef]) -> None:
        self.steps = steps

    @property
    def id(self) -> str:
        return self.steps[-1].id

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait for the last step and return its value; ``TaskFailedError`` naming the step that
        was archived, ``TimeoutError`` after ``timeout`` seconds."""
        if self.steps[-1].eager:
            return self.steps[-1].value
        got = self.steps[0]._watch().wait_many(self._items(), _timeout(timeout), self._enough)
        return self._value(got)

    async def aresult(self, timeout: Optional[float] = None) -> Any:
        if self.steps[-1].eager:
            return self.steps[-1].value
        got = await self.steps[0]._watch().await_many(self._items(), _timeout(timeout), self._enough)
        return self._value(got)

    def _items(self) -> list[tuple[str, str, bool]]:
        return [(s.queue, s.id, i > 0) for i, s in enumerate(self.steps)]  # later steps may not exist yet

    def _enough(self, got: dict[int, Settled]) -> bool:
        return len(self.steps) - 1 in got or any(s.state == "archived" for s in got.values())

    def _value(self, got: dict[int, Settled]) -> Any:
        for i in sorted(got):  # the first step archived, else the last step's value
            if got[i].state == "archived" or i == len(self.steps) - 1:
                return self.steps[i]._outcome(got[i])
        raise AssertionError("not reached")  # pragma: no cover

    def __repr__(self) -> str:
        return f"ChainRef(id={self.id!r}, steps={len(self.steps)})"


class GroupRef:
    """What ``group(...).enqueue()`` returns: ``.id``, ``.members`` (a ``TaskRef`` each) and
    ``result(timeout)``, the list of the members' return values in order."""

    def __init__(self, group_id: str, members: list[TaskRef]) -> None:
        self.id = group_id
        self.members = members

    def result(self, timeout: Optional[float] = None) -> list[Any]:
        """The members' values in order, once all have succeeded; ``TaskFailedError`` as soon as
        one is archived; ``TimeoutError`` after ``timeout`` seconds."""
        if all(m.eager for m in self.members):
            return [m.value for m in self.members]
        got = self.members[0]._watch().wait_many(self._items(), _timeout(timeout), _any_archived)
        return self._values(got)

    async def aresult(self, timeout: Optional[float] = None) -> list[Any]:
        if all(m.eager for m in self.members):
            return [m.value for m in self.members]
        got = await self.members[0]._watch().await_many(self._items(), _timeout(timeout), _any_archived)
        return self._values(got)

    def _items(self) -> list[tuple[str, str, bool]]:
        return [(m.queue, m.id, False) for m in self.members]

    def _values(self, got: dict[int, Settled]) -> list[Any]:
        for i in sorted(got):
            if got[i].state == "archived":
                self.members[i]._outcome(got[i])  # raises TaskFailedError
        return [m._outcome(got[i]) for i, m in enumerate(self.members)]

    def __repr__(self) -> str:
        return f"GroupRef(id={self.id!r}, members={len(self.members)})"


class ChordRef:
    """What ``chord(...).enqueue()`` returns: ``.id`` (the callback's task ID, also the chord's
    name in the Inspector and the CLI), ``.members`` (a ``GroupRef``), ``.callback`` (a
    ``TaskRef``) and ``result(timeout)``, the callback's return value. A failed chord raises
    ``TaskFailedError`` (its callback is archived with the failed member's error)."""

    def __init__(self, callback: TaskRef, members: GroupRef) -> None:
        self.callback = callback
        self.members = members

    @property
    def id(self) -> str:
        return self.callback.id

    @property
    def queue(self) -> str:
        return self.callback.queue

    def result(self, timeout: Optional[float] = None) -> Any:
        return self.callback._result(timeout, later=True)

    async def aresult(self, timeout: Optional[float] = None) -> Any:
        return await self.callback._aresult(timeout, later=True)

    def __repr__(self) -> str:
        return f"ChordRef(id={self.id!r}, members={len(self.members.members)})"

