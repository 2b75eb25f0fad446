"""Workflows (fastq.chain / group / chord) on a real Redis with real fastq workers in-process
(WorkerHarness): order and results, the bytes of created steps, failure paths (chain stops,
chord fails with its error callback), bad input; the crash and multi-process cases are in
tests/faults/test_workflow_crash.py."""
from __future__ import annotations

import asyncio
import json

import pytest

import fastq
from fastq import keys
from fastq._codec import decode_message, encode_message
from fastq.testing import WorkerHarness


@pytest.fixture
def app(redis_url):
    application = fastq.App(redis_url)
    yield application
    application.close()


@pytest.fixture
def tasks(app, r):
    """add, mul, total, boom (fails for good), and a log of who ran with what."""

    @app.task
    def add(x: int, y: int) -> int:
        r.rpush("ran", json.dumps(["add", x, y]))
        return x + y

    @app.task(queue="other")
    def mul(x: int, y: int) -> int:
        r.rpush("ran", json.dumps(["mul", x, y]))
        return x * y

    @app.task
    def total(xs: list[int], label: str = "") -> str:
        return f"{label}{sum(xs)}"

    @app.task(retry_on=())
    def boom(x: int) -> int:
        raise RuntimeError(f"boom {x}")

    @app.task
    def failed(task_id: str) -> None:
        r.rpush("errback", task_id)

    return add, mul, total, boom, failed


def ran(r) -> list[list]:
    return [json.loads(x) for x in r.lrange("ran", 0, -1)]


def drain(app, redis_url, queues=None):
    return WorkerHarness(app, redis_url).drain(queues, timeout=20)  # the App's queues: default, other


def test_chain_runs_in_order_passing_each_result_as_the_next_first_argument(app, r, redis_url, tasks):
    add, mul, *_ = tasks
    ref = fastq.chain(add.s(1, 2), add.s(10), mul.s(3)).enqueue()
    assert len(ref.steps) == 3 and ref.id == ref.steps[-1].id
    # only the first step exists; the others are templates until the step before them succeeds
    assert r.exists(keys.task_key("default", ref.steps[0].id))
    assert not r.exists(keys.task_key("default", ref.steps[1].id))
    assert r.exists(keys.flow_step_key("default", ref.steps[1].id), keys.flow_step_key("other", ref.steps[2].id)) == 2
    assert "other" in {q.decode() for q in r.smembers(keys.ALL_QUEUES)}
    drain(app, redis_url)
    assert ran(r) == [["add", 1, 2], ["add", 3, 10], ["mul", 13, 3]]
    assert ref.result(5) == 39
    # each step is an ordinary Asynq task: completed, kept with its result, its payload Go's JSON bytes
    second = decode_message(r.hget(keys.task_key("default", ref.steps[1].id), "msg"))
    assert second.payload == b'{"x":3,"y":10}' and second.type == add.name and second.queue == "default"
    assert second.retention == fastq.app.DEFAULT_RESULT_RETENTION
    raw = r.hget(keys.task_key("other", ref.steps[2].id), "msg")
    assert encode_message(decode_message(raw)) == raw  # field order as Go writes it
    assert r.hget(keys.task_key("other", ref.steps[2].id), "state") == b"completed"
    assert not r.keys("*fastq_step*")  # every template was consumed


def test_chain_result_waits_for_steps_not_created_yet(app, redis_url, tasks):
    add, *_ = tasks
    ref = fastq.chain(add.s(1, 1), add.s(1)).enqueue()
    with pytest.raises(TimeoutError):
        ref.steps[1]._result(0.2, later=True)  # not created: waited for, not taken as "deleted"
    drain(app, redis_url)
    assert ref.result(5) == 3


def test_a_failed_step_ends_the_chain_and_its_result_raises(app, r, redis_url, tasks):
    add, mul, total, boom, _ = tasks
    ref = fastq.chain(add.s(1, 2), boom.s(), mul.s(3)).enqueue()
    drain(app, redis_url)
    assert ran(r) == [["add", 1, 2]]  # mul never ran
    with pytest.raises(fastq.TaskFailedError) as err:
        ref.result(5)
    assert err.value.task_id == ref.steps[1].id and "boom 3" in str(err.value)
    assert not r.exists(keys.task_key("other", ref.steps[2].id))
    assert not r.keys("*fastq_step*")  # the later step's template went with the failure


def test_group_results_in_order(app, redis_url, tasks):
    add, mul, *_ = tasks
    ref = fastq.group([add.s(i, i) for i in range(5)] + [mul.s(2, 21)]).enqueue()
    assert len(ref.members) == 6
    drain(app, redis_url)
    assert ref.result(5) == [0, 2, 4, 6, 8, 42]


def test_chord_callback_gets_the_members_results_in_order(app, r, redis_url, tasks):
    add, mul, total, *_ = tasks
    header = fastq.group(mul.s(i, i) for i in range(30))
    ref = fastq.chord(header, total.s(label="sum=")).enqueue()
    ins = fastq.Inspector(redis_url)
    try:
        info = ins.get_chord("default", ref.id)
        assert (info.total, info.done, info.state) == (30, 0, "waiting")
        drain(app, redis_url)
        assert ref.result(5) == f"sum={sum(i * i for i in range(30))}"
        callback = decode_message(r.hget(keys.task_key("default", ref.id), "msg"))
        assert callback.payload == (b'{"xs":[' + ",".join(str(i * i) for i in range(30)).encode() +
                                    b'],"label":"sum="}')
        info = ins.get_chord("default", ref.id)
        assert (info.total, info.done, info.state) == (30, 30, "done")
        assert 0 < r.ttl(keys.chord_key("default", ref.id)) <= 86400  # kept a day for inspection
    finally:
        ins.close()


def test_a_failed_member_fails_the_chord_and_runs_its_error_callback(app, r, redis_url, tasks):
    add, mul, total, boom, failed = tasks
    ref = fastq.chord(fastq.group(add.s(1, 1), boom.s(7), add.s(2, 2)), total.s()).on_error(failed.s()).enqueue()
    bad = ref.members.members[1].id
    drain(app, redis_url)
    with pytest.raises(fastq.TaskFailedError) as err:
        ref.result(5)
    assert f"chord member {bad} failed" in str(err.value) and "boom 7" in str(err.value)
    assert r.lrange("errback", 0, -1) == [bad.encode()]  # once, with the failed member's ID
    # the callback is an archived Asynq task (Inspector, CLI, dashboard show it)
    cb = r.hgetall(keys.task_key("default", ref.id))
    assert cb[b"state"] == b"archived" and r.zscore(keys.archived_key("default"), ref.id) is not None
    msg = decode_message(cb[b"msg"])
    assert msg.id == ref.id and msg.type == total.name and msg.error_msg.startswith(f"chord member {bad} failed")
    assert msg.last_failed_at > 0
    ins = fastq.Inspector(redis_url)
    try:
        info = ins.get_chord("default", ref.id)
        assert (info.state, info.failed_member, info.done) == ("failed", bad, 2)
        assert ins.get_task_info("default", ref.id).state == fastq.TaskState.ARCHIVED
    finally:
        ins.close()


def test_chord_fails_without_error_callback_too(app, r, redis_url, tasks):
    add, mul, total, boom, _ = tasks
    ref = fastq.chord([boom.s(1)], total.s()).enqueue()
    drain(app, redis_url)
    with pytest.raises(fastq.TaskFailedError):
        ref.result(5)


def test_async_enqueue_and_results(app, redis_url, tasks):
    add, mul, total, *_ = tasks

    async def main():
        chain_ref = await fastq.chain(add.s(2, 3), mul.s(4)).aenqueue()
        chord_ref = await fastq.chord(fastq.group(add.s(i, 1) for i in range(3)), total.s()).aenqueue()
        group_ref = await fastq.group(add.s(1, 1), mul.s(2, 2)).aenqueue()
        await WorkerHarness(app, redis_url).adrain(timeout=20)
        assert await chain_ref.aresult(5) == 20
        assert await chord_ref.aresult(5) == "6"
        assert await group_ref.aresult(5) == [2, 4]
        await app.aclose()

    asyncio.run(main())


# ------------------------------------------------------------------ bad input

def test_bad_workflows_are_refused_before_anything_is_written(app, r, tasks):
    add, mul, total, *_ = tasks
    with pytest.raises(TypeError, match="item 1 is a int"):
        fastq.chain(add.s(1, 2), 5)
    with pytest.raises(ValueError, match="at least one"):
        fastq.chain()
    with pytest.raises(ValueError, match="'unique' cannot be used in a workflow step"):
        add.s(1, 2).set(unique=60)
    with pytest.raises(TypeError, match="unknown enqueue option"):
        add.s(1, 2).set(colour="red")
    with pytest.raises(fastq.TaskArgumentError, match="x"):  # x comes from the step before
        fastq.chain(add.s(1, 2), add.s(x=1)).enqueue()
    with pytest.raises(fastq.TaskArgumentError, match="y"):
        fastq.chain(add.s(1, 2), add.s("ten")).enqueue()
    with pytest.raises(TypeError, match="callback"):
        fastq.chord([add.s(1, 2)], 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_error\\(\\) belongs to a chord"):
        add.s(1, 2).on_error(add.s(1))
    assert r.dbsize() == 0


def test_a_task_id_in_use_writes_nothing(app, r, tasks):
    add, *_ = tasks
    taken = add.options(task_id="taken").enqueue(1, 1)
    assert taken.id == "taken"
    before = r.dbsize()
    with pytest.raises(fastq.TaskIDConflictError) as err:
        fastq.group(add.s(2, 2), add.s(3, 3).set(task_id="taken")).enqueue()
    assert err.value.ids == ["taken"]
    assert r.dbsize() == before


@pytest.mark.parametrize("link", [b"not json", b'["chain"]', b'{"k":"loop"}', b'{"k":"chain","id":""}',
                                  b'{"k":"chord","id":"c","q":"default","i":-1,"eid":"","eq":""}'])
def test_a_step_whose_link_cannot_be_read_is_archived_with_the_reason(app, r, redis_url, tasks, link):
    add, *_ = tasks
    ref = add.enqueue(1, 2)
    r.hset(keys.flow_links_key("default"), ref.id, link)
    result = drain(app, redis_url, "default")
    assert result.handler_calls == 0
    info = fastq.Inspector(redis_url).get_task_info("default", ref.id)
    assert info.state == fastq.TaskState.ARCHIVED and "workflow link" in info.last_err


def test_a_result_the_next_step_cannot_take_archives_that_step(app, r, redis_url, tasks):
    add, mul, total, *_ = tasks

    @app.task
    def word(x: int) -> str:
        return "seven"

    ref = fastq.chain(word.s(7), add.s(1)).enqueue()  # add's x is an int
    drain(app, redis_url)
    with pytest.raises(fastq.TaskFailedError, match="x"):
        ref.result(5)


def test_eager_mode_runs_workflows_in_process(app, r, tasks):
    add, mul, total, boom, _ = tasks
    with app.eager():
        assert fastq.chain(add.s(1, 2), add.s(10), mul.s(3)).enqueue().result() == 39
        assert fastq.group(add.s(i, i) for i in range(3)).enqueue().result() == [0, 2, 4]
        assert fastq.chord([mul.s(2, 3), mul.s(4, 5)], total.s(label="=")).enqueue().result() == "=26"
        with pytest.raises(RuntimeError, match="boom 3"):
            fastq.chain(add.s(1, 2), boom.s()).enqueue()
    assert not r.keys("asynq:*")  # nothing written to Redis


def test_group_result_raises_as_soon_as_a_member_is_archived(app, r, redis_url, tasks):
    add, mul, total, boom, _ = tasks
    ref = fastq.group(mul.s(1, 1), boom.s(2)).enqueue()  # mul's queue is not served below
    drain(app, redis_url, "default")
    with pytest.raises(fastq.TaskFailedError, match="boom 2"):
        ref.result(timeout=10)  # not a TimeoutError: the archived member decides
    pending = fastq.group(mul.s(1, 1), add.s(1, 1)).enqueue()
    drain(app, redis_url, "default")
    with pytest.raises(TimeoutError, match="1 of 2 tasks"):
        pending.result(timeout=0.5)


def test_results_already_final_are_read_at_once(app, r, redis_url, tasks):
    add, *_ = tasks
    ref = fastq.group(add.s(i, 1) for i in range(200)).enqueue()
    drain(app, redis_url)
    r.config_resetstat()
    assert ref.result(timeout=10) == list(range(1, 201))
    stats = r.info("commandstats")
    assert int(stats["cmdstat_hmget"]["calls"]) == 200  # one read per member, in one pipeline


# ------------------------------------------------------------------ steps whose task is gone

def sweep(r, queues=("default", "other")) -> int:
    from fastq._rdb import flow
    from fastq._rdb.calls import drive

    return sum(drive(r, flow.sweep(q, page=2)) for q in queues)


def delete_as_go(r, queue: str, task_id: str) -> None:
    """What Go's DeleteTask (or the asynq CLI) does to a pending task: it never reads fastq's links."""
    r.lrem(keys.pending_key(queue), 0, task_id)
    r.delete(keys.task_key(queue, task_id))


def test_a_deleted_chain_step_drops_the_rest_of_its_chain(app, r, redis_url, tasks):
    add, mul, *_ = tasks
    ref = fastq.chain(add.s(1, 2), add.s(10), mul.s(3)).enqueue()
    keep = fastq.chain(add.s(5, 5), add.s(1)).enqueue()
    later = [keys.flow_step_key("default", ref.steps[1].id), keys.flow_step_key("other", ref.steps[2].id)]
    assert sweep(r) == 0 and r.exists(*later) == 2  # every step's task is there: nothing to end
    delete_as_go(r, "default", ref.steps[0].id)
    assert sweep(r) == 1
    assert r.exists(*later) == 0 and not r.hexists(keys.flow_links_key("default"), ref.steps[0].id)
    assert sweep(r) == 0
    drain(app, redis_url)  # the other chain is untouched
    assert keep.result(5) == 11 and ran(r) == [["add", 5, 5], ["add", 10, 1]]


def test_a_deleted_chord_member_fails_the_chord(app, r, redis_url, tasks):
    add, mul, total, boom, failed = tasks
    ref = fastq.chord(fastq.group(add.s(1, 1), add.s(2, 2), add.s(3, 3)), total.s()).on_error(failed.s()).enqueue()
    gone = ref.members.members[1].id
    ins = fastq.Inspector(redis_url)
    try:
        delete_as_go(r, "default", gone)
        assert sweep(r) == 1
        info = ins.get_chord("default", ref.id)
        assert (info.state, info.failed_member) == ("failed", gone)
        drain(app, redis_url)  # the other members run; the error callback runs once with the member's ID
        assert r.lrange("errback", 0, -1) == [gone.encode()]
        with pytest.raises(fastq.TaskFailedError, match=f"chord member {gone} is gone"):
            ref.result(5)
        assert ins.get_task_info("default", ref.id).state == fastq.TaskState.ARCHIVED
        assert ins.get_chord("default", ref.id).done == 2
    finally:
        ins.close()
    assert sweep(r) == 0


def test_flow_gone_checks_again_before_writing(app, r, tasks):
    """Between the janitor's EXISTS and its flow_gone call the step may come back or its link
    change: the script checks both atomically and writes nothing then. A link that does not parse
    is only dropped."""
    from fastq._rdb import flow
    from fastq._rdb.calls import execute

    add, *_ = tasks
    ref = fastq.chain(add.s(1, 2), add.s(10)).enqueue()
    first, links = ref.steps[0].id, keys.flow_links_key("default")
    raw = r.hget(links, first)
    template = keys.flow_step_key("default", ref.steps[1].id)
    assert execute(r, [flow.gone_call("default", first, raw, 0)]) == [0]  # the task is there
    r.rename(keys.task_key("default", first), "aside")
    assert execute(r, [flow.gone_call("default", first, raw + b" ", 0)]) == [0]  # not the link read
    assert r.hget(links, first) == raw and r.exists(template)
    r.rename("aside", keys.task_key("default", first))
    r.hset(links, "lost", b"{not json")
    assert sweep(r) == 1 and not r.hexists(links, "lost") and r.hget(links, first) == raw


def test_the_janitor_ends_a_chain_whose_step_was_revoked(app, r, redis_url, tasks):
    import redis.asyncio

    from fastq._rdb.worker import Broker
    from fastq.server.config import WorkerConfig
    from fastq.server.janitor import janitor_loop

    add, *_ = tasks

    @app.task
    def revoke(x: int) -> int:
        raise fastq.RevokeTask()

    ref = fastq.chain(add.s(1, 2), revoke.s(), add.s(1)).enqueue()
    template = keys.flow_step_key("default", ref.steps[2].id)
    drain(app, redis_url)
    assert ran(r) == [["add", 1, 2]]
    assert r.exists(template) and r.hexists(keys.flow_links_key("default"), ref.steps[1].id)

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        stop = asyncio.Event()
        cfg = WorkerConfig(redis_url=redis_url, queues=["default", "other"], janitor_interval=0.02,
                           flow_sweep_interval=0.05)
        loop = asyncio.create_task(janitor_loop(Broker(client), cfg, stop))
        try:
            for _ in range(200):
                if not await client.exists(template):
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await loop
            await client.aclose()

    asyncio.run(main())
    assert not r.exists(template) and not r.hexists(keys.flow_links_key("default"), ref.steps[1].id)


def test_an_archived_step_trims_the_archive_as_any_archived_task(app, r, redis_url, tasks):
    """Only workflow steps fail on this queue: their archiving alone must keep the archive within
    Asynq's bounds (older than 90 days out, with its hash)."""
    add, mul, total, boom, _ = tasks
    old = keys.task_key("default", "ancient")
    r.hset(old, mapping={"msg": b"x", "state": "archived"})
    r.zadd(keys.archived_key("default"), {"ancient": 1})
    ref = fastq.chain(boom.s(1), add.s(1)).enqueue()
    drain(app, redis_url)
    assert r.zscore(keys.archived_key("default"), ref.steps[0].id) is not None
    assert r.zscore(keys.archived_key("default"), "ancient") is None and not r.exists(old)


def test_deleting_a_step_with_the_inspector_ends_its_workflow_at_once(app, r, redis_url, tasks):
    add, mul, total, *_ = tasks
    chain_ref = fastq.chain(add.s(1, 2), add.s(10)).enqueue()
    chord_ref = fastq.chord([add.s(1, 1), add.s(2, 2)], total.s()).enqueue()
    ins = fastq.Inspector(redis_url)
    try:
        ins.delete_task("default", chain_ref.steps[0].id)
        ins.delete_task("default", chord_ref.members.members[0].id)
        assert not r.exists(keys.flow_step_key("default", chain_ref.steps[1].id))
        assert ins.get_chord("default", chord_ref.id).state == "failed"
        ins.delete_task("default", chord_ref.members.members[1].id)  # its chord has failed already
        assert not r.hlen(keys.flow_links_key("default"))
    finally:
        ins.close()
    assert sweep(r) == 0
