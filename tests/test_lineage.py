"""Task lineage: tasks enqueued inside a handler carry fastq-parent-id / fastq-root-id headers."""
from __future__ import annotations

import asyncio

import pytest
from helpers import RunningWorker, async_wait_for

import fastq
from fastq import keys
from fastq._codec import decode_message
from fastq.context import PARENT_ID_HEADER, ROOT_ID_HEADER
from fastq.options import plan_enqueue
from fastq.testing import run_handler, task_context


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def wire_fields(data: bytes) -> list[tuple[int, object]]:
    """A protobuf wire-format walk written from the spec, independent of fastq's codecs:
    what any protobuf library (Go's included) sees in the bytes."""
    out, pos = [], 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _varint(data, pos)
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        else:
            raise AssertionError(f"TaskMessage has no wire type {wire_type} (field {number})")
        out.append((number, value))
    return out


def wire_headers(data: bytes) -> dict[str, str]:
    """Field 15 map<string,string> entries (key = 1, value = 2), as Go's protobuf decodes them."""
    headers = {}
    for number, entry in wire_fields(data):
        if number == 15:
            kv = dict(wire_fields(entry))
            headers[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
    return headers


# ------------------------------------------------------------------ plan_enqueue

def test_no_lineage_outside_a_handler():
    assert plan_enqueue(fastq.Task("t"), {}).msg.headers == {}
    assert plan_enqueue(fastq.Task("t", b"", {"trace": "x"}), {}).msg.headers == {"trace": "x"}


def test_a_task_enqueued_by_a_top_level_task_has_it_as_parent_and_root():
    with task_context("A"):
        msg = plan_enqueue(fastq.Task("t", b"", {"trace": "x"}), {}).msg
    assert msg.headers == {PARENT_ID_HEADER: "A", ROOT_ID_HEADER: "A", "trace": "x"}


def test_the_root_is_inherited_from_the_parent():
    with task_context("B", headers={PARENT_ID_HEADER: "A", ROOT_ID_HEADER: "A"}):
        msg = plan_enqueue(fastq.Task("t"), {}).msg
    assert msg.headers == {PARENT_ID_HEADER: "B", ROOT_ID_HEADER: "A"}


def test_explicit_headers_win():
    with task_context("B", headers={ROOT_ID_HEADER: "A"}):
        msg = plan_enqueue(fastq.Task("t", b"", {PARENT_ID_HEADER: "mine", ROOT_ID_HEADER: "my-root"}), {}).msg
    assert msg.headers == {PARENT_ID_HEADER: "mine", ROOT_ID_HEADER: "my-root"}


def test_lineage_does_not_change_the_caller_task_or_the_unique_key():
    task = fastq.Task("t", b"p", {"k": "v"})
    plain = plan_enqueue(task, {"unique": 60})
    with task_context("A"):
        child = plan_enqueue(task, {"unique": 60})
    assert task.headers == {"k": "v"}
    assert child.msg.unique_key == plain.msg.unique_key  # Asynq's key: queue, type and payload only


# ------------------------------------------------------------------ readers

def test_readers_outside_a_handler_raise():
    for getter in (fastq.get_parent_task_id, fastq.get_root_task_id):
        with pytest.raises(fastq.NoTaskContextError, match=getter.__name__):
            getter()


def test_readers_return_none_for_a_task_without_parent():
    got = run_handler(lambda t: (fastq.get_parent_task_id(), fastq.get_root_task_id()), fastq.Task("t"))
    assert got == (None, None)


def test_readers_ignore_empty_header_values():
    with task_context(headers={PARENT_ID_HEADER: "", ROOT_ID_HEADER: ""}):
        assert fastq.get_parent_task_id() is None and fastq.get_root_task_id() is None


# ------------------------------------------------------------------ clients, against a real Redis

def test_client_enqueue_and_enqueue_many_record_lineage(redis_url, r, codec):
    client = fastq.Client(redis_url)
    try:
        with task_context("A", headers={ROOT_ID_HEADER: "R"}):
            one = client.enqueue(fastq.Task("t", b"1"))
            many = client.enqueue_many([fastq.Task("t", b"2"), fastq.Task("t", b"3", {"x": "y"})])
            scheduled = client.enqueue(fastq.Task("t", b"4"), process_in=60)
        outside = client.enqueue(fastq.Task("t", b"5"))
    finally:
        client.close()
    expected = {PARENT_ID_HEADER: "A", ROOT_ID_HEADER: "R"}
    assert one.headers == expected
    for info in [one, *many, scheduled]:
        raw = r.hget(keys.task_key("default", info.id), "msg")
        want = {**expected, "x": "y"} if info.payload == b"3" else expected
        assert codec.decode_message(raw).headers == want  # both codecs decode it
        assert wire_headers(raw) == want  # and so does a plain protobuf reader (Go's view)
        assert dict(wire_fields(raw))[1] == b"t" and dict(wire_fields(raw))[3] == info.id.encode()
    assert wire_headers(r.hget(keys.task_key("default", outside.id), "msg")) == {}


def test_async_client_records_lineage(redis_url, r):
    async def main():
        async with fastq.AsyncClient(redis_url) as client:
            with task_context("A"):
                info = await client.enqueue(fastq.Task("t"))
                infos = await client.enqueue_many([fastq.Task("t", b"x")])
            return info, infos

    info, infos = asyncio.run(main())
    for tid in (info.id, infos[0].id):
        raw = r.hget(keys.task_key("default", tid), "msg")
        assert wire_headers(raw) == {PARENT_ID_HEADER: "A", ROOT_ID_HEADER: "A"}


# ------------------------------------------------------------------ end to end, real worker

def test_lineage_end_to_end_a_enqueues_b_enqueues_c(redis_url, r):
    """A (async, AsyncClient) enqueues B; B (sync, in a thread, Client) enqueues C; C sees parent=B, root=A.
    C fails once: its headers survive the retry, as they would on a Go server."""
    seen: dict[str, tuple] = {}

    async def a(task):
        seen["a"] = (fastq.get_task_id(), fastq.get_parent_task_id(), fastq.get_root_task_id())
        async with fastq.AsyncClient(redis_url) as client:
            await client.enqueue(fastq.Task("b", b""))

    def b(task):
        seen["b"] = (fastq.get_task_id(), fastq.get_parent_task_id(), fastq.get_root_task_id())
        with fastq.Client(redis_url) as client:
            client.enqueue(fastq.Task("c", b""))

    async def c(task):
        if fastq.get_retry_count() == 0:
            seen["c-first"] = dict(task.headers)
            raise RuntimeError("once")
        seen["c"] = (fastq.get_task_id(), fastq.get_parent_task_id(), fastq.get_root_task_id())

    mux = fastq.ServeMux()
    mux.handle("a", a)
    mux.handle("b", b)
    mux.handle("c", c)
    with fastq.Client(redis_url) as client:
        client.enqueue(fastq.Task("a", b""))

    async def main():
        async with RunningWorker(mux, redis_url, retry_delay=lambda *args: 0, forward_interval=0.05):
            await async_wait_for(lambda: "c" in seen, what="task C's second run")

    asyncio.run(main())
    a_id, a_parent, a_root = seen["a"]
    b_id, b_parent, b_root = seen["b"]
    c_id, c_parent, c_root = seen["c"]
    assert (a_parent, a_root) == (None, None)
    assert (b_parent, b_root) == (a_id, a_id)
    assert (c_parent, c_root) == (b_id, a_id)
    assert seen["c-first"] == {PARENT_ID_HEADER: b_id, ROOT_ID_HEADER: a_id}
    assert len({a_id, b_id, c_id}) == 3


def test_headers_survive_retry_and_archive_in_redis(redis_url, r):
    async def fail(task):
        raise fastq.SkipRetry("stop") if fastq.get_retry_count() else ValueError("again")

    with task_context("P", headers={ROOT_ID_HEADER: "R"}):
        with fastq.Client(redis_url) as client:
            retried = client.enqueue(fastq.Task("t", b"1"), max_retry=5)
            archived = client.enqueue(fastq.Task("t", b"2"), max_retry=0)
    want = {PARENT_ID_HEADER: "P", ROOT_ID_HEADER: "R"}

    async def main():
        async with RunningWorker(fail, redis_url):
            await async_wait_for(lambda: r.zcard(keys.retry_key("default")) and r.zcard(keys.archived_key("default")),
                                 what="retry and archive")

    asyncio.run(main())
    for info, state in ((retried, b"retry"), (archived, b"archived")):
        fields = r.hgetall(keys.task_key("default", info.id))
        assert fields[b"state"] == state
        assert decode_message(fields[b"msg"]).headers == want
        assert wire_headers(fields[b"msg"]) == want
