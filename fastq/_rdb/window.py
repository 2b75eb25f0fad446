"""Keep one script call in flight while the client builds the next (``enqueue_many``).

A round trip of ``enqueue_many`` is Redis running one chunk's script; the client spends about
as long encoding the next chunk and building ``TaskInfo`` objects for the last one. Run one
after the other, the two add up. The window overlaps them: it sends call *k*, then hands the
reply of call *k - 1* to the steps generator, which builds call *k + 1* while Redis works.

Protocol of ``steps``: it yields a script ``Call`` (``None`` when there is none left) and receives
the reply of the call it yielded before the last one (``None`` the first time). It returns its
result.

The window talks to one pooled connection directly, so only a plain ``redis.Redis`` /
``redis.asyncio.Redis`` over a plain connection pool qualifies (``window_pool``); Sentinel,
Cluster and WAIT-durability clients keep their own command path. Calls are applied in the order
they are yielded, whatever happens:

* a ``NOSCRIPT`` reply loads the script and sends that call again through the client, and the
  call already in flight behind it is read (and sent again if refused too)
  before the next is sent;
* a connection error drops the connection and sends every call not yet answered through the
  client, with its retry policy. Such a call may already have been applied (its reply was
  lost): its reply comes wrapped in ``Resent`` so the steps generator knows (enqueue_many's
  fresh random IDs make "already exists" replies its own writes). A call applied on the lost
  connection was applied before any later one, since one connection runs its calls in order.
"""
from __future__ import annotations

from typing import Any, Callable, Generator, Optional

import redis
import redis.asyncio
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

from fastq._rdb.calls import IO, Call, Op, arun, checked, load, run

_pack: Optional[Callable[[tuple[Any, ...]], bytes]]
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _pack = None

__all__ = ["Resent", "WindowSteps", "window_pool", "run_window", "arun_window"]

_LOST = (ConnectionError, TimeoutError, OSError)

WindowSteps = Generator[Optional[Call], Any, Any]


class Resent:
    """The reply of a call that was sent again after its connection failed."""

    __slots__ = ("reply",)

    def __init__(self, reply: Any) -> None:
        self.reply = reply


def window_pool(client: Any) -> Any:
    """The connection pool the window may use for ``client``, or None (use the client's path)."""
    if type(client) is redis.Redis and type(client.connection_pool) is redis.ConnectionPool:
        return client.connection_pool
    if type(client) is redis.asyncio.Redis and type(client.connection_pool) is redis.asyncio.ConnectionPool:
        return client.connection_pool
    return None


def _packed(conn: Any, call: Call) -> Any:
    assert call.script is not None
    keys, args = call.args
    if _pack is not None:
        return [_pack((b"EVALSHA", call.script.sha, len(keys), *keys, *args))]
    return conn.pack_command("EVALSHA", call.script.sha, len(keys), *keys, *args)


class _Acquire(Op):
    __slots__ = ("pool",)

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def sync(self, client: Any) -> Any:
        return self.pool.get_connection()

    async def async_(self, client: Any) -> Any:
        return await self.pool.get_connection()


class _Release(_Acquire):
    __slots__ = ("conn",)

    def __init__(self, pool: Any, conn: Any) -> None:
        super().__init__(pool)
        self.conn = conn

    def sync(self, client: Any) -> None:
        self.pool.release(self.conn)

    async def async_(self, client: Any) -> None:
        await self.pool.release(self.conn)


class _Conn(Op):
    """A step on the window's connection: send one packed call, read one reply, or disconnect."""

    __slots__ = ("conn", "what", "call")

    def __init__(self, conn: Any, what: str, call: Optional[Call] = None) -> None:
        self.conn, self.what, self.call = conn, what, call

    def sync(self, client: Any) -> Any:
        if self.what == "send":
            return self.conn.send_packed_command(_packed(self.conn, self.call), check_health=False)  # type: ignore[arg-type]
        return getattr(self.conn, self.what)()

    async def async_(self, client: Any) -> Any:
        if self.what == "send":
            return await self.conn.send_packed_command(_packed(self.conn, self.call),  # type: ignore[arg-type]
                                                       check_health=False)
        return await getattr(self.conn, self.what)()


def window(pool: Any, steps: WindowSteps) -> IO[Any]:
    """The window's I/O (see the module docstring)."""
    try:
        conn = yield _Acquire(pool)
    except _LOST:  # the client's own retry policy decides
        conn = None
    broken = conn is None
    stalled = False  # the last reply read was NOSCRIPT: read the one in flight before sending

    def send(call: Call) -> IO[None]:
        nonlocal broken
        if not broken:
            try:
                yield _Conn(conn, "send", call)
            except _LOST:
                broken = True
                yield _Conn(conn, "disconnect")

    def read(call: Call) -> IO[Any]:
        nonlocal broken, stalled
        stalled = False
        if not broken:
            try:
                return (yield _Conn(conn, "read_response"))
            except NoScriptError:  # load it, then send the call again through the client
                stalled = True
                yield from load(call.script)  # type: ignore[arg-type]
                return (yield from checked([call]))[0]
            except _LOST:
                broken = True
                yield _Conn(conn, "disconnect")
        return Resent((yield from checked([call]))[0])

    prev: Optional[Call] = None
    closing = False
    try:
        call = next(steps)
        while True:
            if stalled:
                reply = (yield from read(prev)) if prev is not None else None
                if call is not None:
                    yield from send(call)
            else:
                if call is not None:
                    yield from send(call)
                reply = (yield from read(prev)) if prev is not None else None
            prev, call = call, steps.send(reply)
    except StopIteration as done:
        return done.value
    except GeneratorExit:  # closed unfinished: no more I/O possible
        closing = True
        raise
    except BaseException:  # an error or a cancellation: replies may be left unread on it
        if conn is not None:
            yield _Conn(conn, "disconnect")
        raise
    finally:
        if conn is not None and not closing:
            yield _Release(pool, conn)


def run_window(client: Any, pool: Any, steps: WindowSteps) -> Any:
    return run(client, window(pool, steps))


async def arun_window(client: Any, pool: Any, steps: WindowSteps) -> Any:
    """``run_window`` for redis.asyncio clients."""
    return await arun(client, window(pool, steps))
