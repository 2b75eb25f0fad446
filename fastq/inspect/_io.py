"""The I/O of the Inspector: Redis calls described as data, run by a sync or async driver.

Every Inspector operation is written once as a generator ("steps") that yields the
list of calls of one round trip and receives their replies; ``drive`` runs it with a
``redis.Redis`` and ``adrive`` with a ``redis.asyncio.Redis``. Several calls in one
step go out as one non-transactional pipeline. An error reply is thrown into the
steps, so they can say what it means (see ``_common.queue_steps``). Script calls use ``EVALSHA`` and are
reloaded after ``NOSCRIPT`` (restart, failover, ``SCRIPT FLUSH``).
"""
from __future__ import annotations

from typing import Any, Generator, NamedTuple, Sequence, TypeVar

from redis.exceptions import NoScriptError, ResponseError

from fastq._scripts import Script

T = TypeVar("T")


class Call(NamedTuple):
    """One Redis call: a Lua script (``script`` set) or a redis-py method by name."""

    script: Script | None
    method: str
    args: tuple
    kwargs: dict


Steps = Generator[list, list, T]


def script(s: Script, keys: Sequence, args: Sequence) -> Call:
    return Call(s, "", (tuple(keys), tuple(args)), {})


def cmd(method: str, *args: Any, **kwargs: Any) -> Call:
    return Call(None, method, args, kwargs)


def _queue(target: Any, call: Call) -> Any:
    if call.script is not None:
        keys, args = call.args
        return target.evalsha(call.script.sha, len(keys), *keys, *args)
    return getattr(target, call.method)(*call.args, **call.kwargs)


def _raise_first(replies: list) -> list:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def execute(client: Any, calls: Sequence[Call]) -> list:
    """Run ``calls`` in one round trip on a sync client; return their replies in order."""
    if len(calls) == 1:
        call = calls[0]
        if call.script is not None:
            return [call.script.run(client, *call.args)]
        return [_queue(client, call)]
    pipe = client.pipeline(transaction=False)
    for call in calls:
        _queue(pipe, call)
    replies = pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError) and calls[i].script is not None:
            replies[i] = calls[i].script.run(client, *calls[i].args)
    return _raise_first(replies)


async def aexecute(client: Any, calls: Sequence[Call]) -> list:
    """``execute`` for redis.asyncio clients."""
    if len(calls) == 1:
        call = calls[0]
        if call.script is not None:
            return [await call.script.arun(client, *call.args)]
        return [await _queue(client, call)]
    pipe = client.pipeline(transaction=False)
    for call in calls:
        _queue(pipe, call)
    replies = await pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError) and calls[i].script is not None:
            replies[i] = await calls[i].script.arun(client, *calls[i].args)
    return _raise_first(replies)


def drive(client: Any, steps: Steps[T]) -> T:
    """Run an operation's steps on a sync client and return its result."""
    try:
        calls = next(steps)
        while True:
            try:
                replies = execute(client, calls)
            except ResponseError as exc:  # let the steps name what the error means
                calls = steps.throw(exc)
                continue
            calls = steps.send(replies)
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


async def adrive(client: Any, steps: Steps[T]) -> T:
    """Run an operation's steps on an asyncio client and return its result."""
    try:
        calls = next(steps)
        while True:
            try:
                replies = await aexecute(client, calls)
            except ResponseError as exc:
                calls = steps.throw(exc)
                continue
            calls = steps.send(replies)
    except StopIteration as done:
        return done.value
    finally:
        steps.close()
