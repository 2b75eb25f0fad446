"""Keep one script call in flight while the client builds the next (``enqueue_many``).

A round trip of ``enqueue_many`` is Redis running one chunk's script; the client spends about
as long encoding the next chunk and building ``TaskInfo`` objects for the last one. Run one
after the other, the two add up. ``run_window`` overlaps them: it sends call *k*, then hands the
reply of call *k - 1* to the steps generator, which builds call *k + 1* while Redis works.

Protocol of ``steps``: it yields a call (``None`` when there is none left) and receives the reply
of the call it yielded before the last one (``None`` the first time). It returns its result.

The window talks to one pooled connection directly, so only a plain ``redis.Redis`` /
``redis.asyncio.Redis`` over a plain connection pool qualifies (``sync_window_pool`` /
``async_window_pool``); Sentinel, Cluster and WAIT-durability clients keep their own command
path. Calls are applied in the order they are yielded, whatever happens:

* a ``NOSCRIPT`` reply re-runs that call through ``Script.run`` (which loads the script), and
  the call already in flight behind it is read (and re-run if refused too) before the next is
  sent;
* a connection error drops the connection and runs every call not yet answered through the
  client, with its retry policy. Such a call may already have been applied (its reply was
  lost): its reply comes wrapped in ``Resent`` so the steps generator knows (enqueue_many's
  fresh random IDs make "already exists" replies its own writes). A call applied on the lost
  connection was applied before any later one, since one connection runs its calls in order.
"""
from __future__ import annotations

from typing import Any, Generator, Optional

import redis
import redis.asyncio
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _pack = None

__all__ = ["Resent", "run_window", "arun_window", "sync_window_pool", "async_window_pool"]

_LOST = (ConnectionError, TimeoutError, OSError)


class Resent:
    """The reply of a call that was sent again after its connection failed."""

    __slots__ = ("reply",)

    def __init__(self, reply: Any) -> None:
        self.reply = reply


def sync_window_pool(client: Any) -> Optional[redis.ConnectionPool]:
    if type(client) is redis.Redis and type(client.connection_pool) is redis.ConnectionPool:
        return client.connection_pool
    return None


def async_window_pool(client: Any) -> Optional[redis.asyncio.ConnectionPool]:
    if type(client) is redis.asyncio.Redis and type(client.connection_pool) is redis.asyncio.ConnectionPool:
        return client.connection_pool
    return None


def _packed(conn: Any, call: Any) -> Any:
    script, keys, args = call
    if _pack is not None:
        return [_pack((b"EVALSHA", script.sha, len(keys), *keys, *args))]
    return conn.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)


Steps = Generator[Any, Any, Any]


class _State:
    """Where the window stands. ``stalled``: the last reply read was NOSCRIPT, so the call in
    flight after it was probably refused too; read it before sending the next, so that calls run
    again after the script is loaded keep their order. ``broken``: the connection failed; every
    call still to answer goes through the client instead."""

    __slots__ = ("stalled", "broken")

    def __init__(self, broken: bool) -> None:
        self.stalled = False
        self.broken = broken


def run_window(client: Any, pool: Any, steps: Steps) -> Any:
    try:
        conn = pool.get_connection()
    except _LOST:  # the client's own retry policy decides
        conn = None
    state = _State(broken=conn is None)

    def send(call: Any) -> None:
        if not state.broken:
            try:
                conn.send_packed_command(_packed(conn, call), check_health=False)
            except _LOST:
                state.broken = True
                conn.disconnect()

    def read(call: Any) -> Any:
        script, keys, args = call
        state.stalled = False
        if not state.broken:
            try:
                return conn.read_response()
            except NoScriptError:
                state.stalled = True
                script.load(client)
                return script.run(client, keys, args)
            except _LOST:
                state.broken = True
                conn.disconnect()
        return Resent(script.run(client, keys, args))

    prev = None
    try:
        call = next(steps)
        while True:
            if state.stalled:
                reply = read(prev) if prev is not None else None
                if call is not None:
                    send(call)
            else:
                if call is not None:
                    send(call)
                reply = read(prev) if prev is not None else None
            prev, call = call, steps.send(reply)
    except StopIteration as done:
        return done.value
    except BaseException:
        if conn is not None:
            conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        if conn is not None:
            pool.release(conn)


async def arun_window(client: Any, pool: Any, steps: Steps) -> Any:
    """``run_window`` for redis.asyncio clients."""
    try:
        conn = await pool.get_connection()
    except _LOST:
        conn = None
    state = _State(broken=conn is None)

    async def send(call: Any) -> None:
        if not state.broken:
            try:
                await conn.send_packed_command(_packed(conn, call), check_health=False)
            except _LOST:
                state.broken = True
                await conn.disconnect()

    async def read(call: Any) -> Any:
        script, keys, args = call
        state.stalled = False
        if not state.broken:
            try:
                return await conn.read_response()
            except NoScriptError:
                state.stalled = True
                await script.aload(client)
                return await script.arun(client, keys, args)
            except _LOST:
                state.broken = True
                await conn.disconnect()
        return Resent(await script.arun(client, keys, args))

    prev = None
    try:
        call = next(steps)
        while True:
            if state.stalled:
                reply = await read(prev) if prev is not None else None
                if call is not None:
                    await send(call)
            else:
                if call is not None:
                    await send(call)
                reply = await read(prev) if prev is not None else None
            prev, call = call, steps.send(reply)
    except StopIteration as done:
        return done.value
    except BaseException:
        if conn is not None:
            await conn.disconnect()
        raise
    finally:
        if conn is not None:
            await pool.release(conn)
