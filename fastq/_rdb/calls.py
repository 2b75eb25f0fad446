"""Redis calls described as data, and the one path that sends them.

A ``Call`` is a Lua script call (``script(...)``) or a redis-py command (``cmd(...)``). The calls
of one round trip go out together: one call as itself, several as one non-transactional pipeline.
Script calls use ``EVALSHA``; calls the server refuses with ``NOSCRIPT`` (restart, failover,
``SCRIPT FLUSH``) get their scripts loaded and are sent again — that is written once, in
``exchange``.

Every operation is a generator of *I/O steps* (``Op`` objects: a round trip, a script load, a raw
connection send/read for the window) that receives each step's result, so the same code runs on a
``redis.Redis`` (``run``) and on a ``redis.asyncio.Redis`` (``arun``): the drivers are the only
place that differ by ``await``. An exception raised by a step is thrown into the generator.

Public entry points:

* ``execute(client, calls)`` / ``aexecute``: one round trip; raises the first error reply;
* ``send(client, calls)`` / ``asend``: one round trip; error replies stay in the list;
* ``drive(client, steps)`` / ``adrive``: run a multi-round operation written as *steps* — a
  generator that yields the calls of one round trip and receives their replies (an error reply
  is thrown into it, so it can say what the error means); it returns the operation's result.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, NamedTuple, Optional, Sequence, TypeVar

from redis.exceptions import NoScriptError, ResponseError

if TYPE_CHECKING:
    from fastq._rdb.scripts import Script

__all__ = ["Call", "script", "cmd", "Steps", "execute", "aexecute", "send", "asend", "drive", "adrive",
           "run", "arun", "exchange", "Op"]

T = TypeVar("T")


class Call(NamedTuple):
    """One Redis call: a Lua script (``script`` set, ``args`` = ``(keys, argv)``) or a redis-py
    method by name (``method``, ``args``, ``kwargs``)."""

    script: Optional[Script]
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


_NO_KWARGS: dict[str, Any] = {}


def script(s: Script, keys: Sequence[Any], args: Sequence[Any]) -> Call:
    return Call(s, "", (keys, args), _NO_KWARGS)


def cmd(method: str, *args: Any, **kwargs: Any) -> Call:
    return Call(None, method, args, kwargs)


def _queue(target: Any, call: Call) -> Any:
    """Issue ``call`` on a client or pipeline (a reply, a coroutine, or the pipeline itself)."""
    s = call.script
    if s is not None:
        keys, args = call.args
        return target.evalsha(s.sha, len(keys), *keys, *args)
    return getattr(target, call.method)(*call.args, **call.kwargs)


# ------------------------------------------------------------------ I/O steps

class Op:
    """One I/O step: ``sync(client)`` does it on a sync client, ``async_(client)`` on an asyncio
    one. Each is a single redis-py call, so the two differ by nothing but ``await``."""

    __slots__ = ()

    def sync(self, client: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    async def async_(self, client: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class _Round(Op):
    """One round trip; the result is the list of replies, error replies included."""

    __slots__ = ("calls",)

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = calls

    def _pipe(self, client: Any) -> Any:
        pipe = client.pipeline(transaction=False)
        for call in self.calls:
            _queue(pipe, call)
        return pipe

    def sync(self, client: Any) -> list[Any]:
        if len(self.calls) == 1:
            try:
                return [_queue(client, self.calls[0])]
            except ResponseError as exc:
                return [exc]
        return self._pipe(client).execute(raise_on_error=False)  # type: ignore[no-any-return]

    async def async_(self, client: Any) -> list[Any]:
        if len(self.calls) == 1:
            try:
                return [await _queue(client, self.calls[0])]
            except ResponseError as exc:
                return [exc]
        return await self._pipe(client).execute(raise_on_error=False)  # type: ignore[no-any-return]


class _Load(Op):
    """SCRIPT LOAD; the result is None, or the error reply."""

    __slots__ = ("script",)

    def __init__(self, s: Script) -> None:
        self.script = s

    def sync(self, client: Any) -> Optional[ResponseError]:
        try:
            client.script_load(self.script.source)
        except ResponseError as exc:
            return exc
        return None

    async def async_(self, client: Any) -> Optional[ResponseError]:
        try:
            await client.script_load(self.script.source)
        except ResponseError as exc:
            return exc
        return None


IO = Generator[Op, Any, T]


def load(s: Script) -> IO[None]:
    """Load one script (on an old server that refuses the shebang, its plain form)."""
    error = yield _Load(s)
    if error is not None and s.load_refused(error):
        error = yield _Load(s)
    if error is not None:
        raise error


def exchange(calls: Sequence[Call]) -> IO[list[Any]]:
    """One round trip of ``calls``; the replies in order, error replies included. The one place
    that handles NOSCRIPT: load the refused scripts, send their calls again (one more round)."""
    replies = yield _Round(calls)
    refused = [i for i, reply in enumerate(replies)
               if isinstance(reply, NoScriptError) and calls[i].script is not None]
    if refused:
        for s in dict.fromkeys(calls[i].script for i in refused):
            yield from load(s)  # type: ignore[arg-type]
        again = yield _Round([calls[i] for i in refused])
        replies = list(replies)
        for i, reply in zip(refused, again, strict=True):
            replies[i] = reply
    return replies  # type: ignore[no-any-return]


def raise_first(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def checked(calls: Sequence[Call]) -> IO[list[Any]]:
    """``exchange``, raising the first error reply."""
    return raise_first((yield from exchange(calls)))


Steps = Generator[Sequence[Call], list[Any], T]


def steps_io(steps: Steps[T]) -> IO[T]:
    """The I/O of a steps generator: each yielded list is one round trip; an error reply is
    thrown into the steps."""
    try:
        try:
            calls = next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        while True:
            replies = yield from exchange(calls)
            try:
                try:
                    raise_first(replies)
                except ResponseError as exc:  # let the steps name what the error means
                    calls = steps.throw(exc)
                    continue
                calls = steps.send(replies)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
    finally:
        steps.close()


# ------------------------------------------------------------------ drivers

def run(client: Any, io: IO[T]) -> T:
    """Drive ``io`` on a sync client."""
    try:
        op = next(io)
        while True:
            try:
                result = op.sync(client)
            except BaseException as exc:  # the generator may handle it (the window does)
                op = io.throw(exc)
                continue
            op = io.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def arun(client: Any, io: IO[T]) -> T:
    """Drive ``io`` on an asyncio client."""
    try:
        op = next(io)
        while True:
            try:
                result = await op.async_(client)
            except BaseException as exc:
                op = io.throw(exc)
                continue
            op = io.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def execute(client: Any, calls: Sequence[Call]) -> list[Any]:
    """Run ``calls`` in one round trip on a sync client; their replies in order."""
    return run(client, checked(calls))


async def aexecute(client: Any, calls: Sequence[Call]) -> list[Any]:
    """``execute`` for redis.asyncio clients."""
    return await arun(client, checked(calls))


def send(client: Any, calls: Sequence[Call]) -> list[Any]:
    """Like ``execute``, but error replies are returned in the list, not raised."""
    return run(client, exchange(calls))


async def asend(client: Any, calls: Sequence[Call]) -> list[Any]:
    """``send`` for redis.asyncio clients."""
    return await arun(client, exchange(calls))


def drive(client: Any, steps: Steps[T]) -> T:
    """Run an operation's steps on a sync client and return its result."""
    return run(client, steps_io(steps))


async def adrive(client: Any, steps: Steps[T]) -> T:
    """Run an operation's steps on an asyncio client and return its result."""
    return await arun(client, steps_io(steps))


def load_scripts(scripts: Sequence[Script]) -> IO[None]:
    """SCRIPT LOAD each of ``scripts`` (so later calls need no NOSCRIPT round trip)."""
    for s in scripts:
        yield from load(s)
