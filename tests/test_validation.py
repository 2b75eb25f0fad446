"""Bad enqueue values are refused with ``InvalidOptionError`` naming the option, before
anything is written to Redis (issue 13, item 6).

Each case runs through ``Client.enqueue``, ``AsyncClient.enqueue`` and ``enqueue_many`` (sync
and async) against the session's real redis-server, and checks that the database did not
change: no task, no uniqueness lock, no ``asynq:queues`` member.
"""
from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta, timezone

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastq
from fastq import _validate
from fastq._codec import encode_message
from fastq.client import _info
from fastq.options import plan_enqueue
from fastq.scheduler import PeriodicTaskConfig, Scheduler
from fastq.server.config import WorkerConfig, parse_queues

_counter = itertools.count()


def _queue() -> str:
    return f"val-{next(_counter)}"


def _snapshot(r: redis.Redis) -> tuple:
    return r.dbsize(), sorted(r.smembers("asynq:queues"))


def _enqueue_everywhere(redis_url: str, task: fastq.Task, options: dict) -> list[BaseException]:
    """Try ``task`` with ``options`` through every enqueue path; return what each raised."""
    errors: list[BaseException] = []
    with fastq.Client(redis_url) as client:
        for call in (lambda: client.enqueue(task, **options),
                     lambda: client.enqueue_many([task, task], **options)):
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - the caller asserts on it
                errors.append(exc)
            else:
                errors.append(AssertionError("no error raised"))

    async def main() -> None:
        async with fastq.AsyncClient(redis_url) as client:
            for call in (lambda: client.enqueue(task, **options),
                         lambda: client.enqueue_many([task, task], **options)):
                try:
                    await call()
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                else:
                    errors.append(AssertionError("no error raised"))

    asyncio.run(main())
    return errors


def _assert_refused(r: redis.Redis, redis_url: str, task: fastq.Task, options: dict, name: str) -> None:
    """Every path raises InvalidOptionError naming ``name`` ("option 'queue'", "task type")."""
    before = _snapshot(r)
    errors = _enqueue_everywhere(redis_url, task, options)
    needle = "task type" if name == "type" else f"option '{name}'"
    for exc in errors:
        assert isinstance(exc, fastq.InvalidOptionError), repr(exc)
        assert needle in str(exc), str(exc)
    assert _snapshot(r) == before, "something was written to Redis"


UTC = timezone.utc
FAR = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-23)))  # year 10000 in UTC

BAD_OPTIONS = [
    ("process_in", {"process_in": 1e20}),
    ("process_in", {"process_in": 1e17}),
    ("process_in", {"process_in": 10**400}),
    ("process_in", {"process_in": timedelta.max}),
    ("process_in", {"process_in": _validate.MAX_DURATION + 1}),
    ("timeout", {"timeout": 2**63}),
    ("timeout", {"timeout": 1e300}),
    ("timeout", {"timeout": timedelta(days=999_999_999)}),
    ("retention", {"retention": 2**63}),
    ("retention", {"retention": 2**62}),
    ("unique", {"unique": 1e19}),
    ("unique", {"unique": 1e19, "process_in": 60}),
    ("unique", {"unique": 10**19, "group": "g"}),
    ("process_at", {"process_at": FAR}),
    ("process_at", {"process_at": datetime(9999, 12, 31, 12, tzinfo=timezone(timedelta(hours=-12)))}),
    ("deadline", {"deadline": FAR}),
    ("deadline", {"deadline": datetime(1969, 12, 31, 23, 59, tzinfo=UTC)}),
    ("group", {"group": "\ud800"}),
    ("task_id", {"task_id": "\udfff"}),
]


@pytest.mark.parametrize("name, options", BAD_OPTIONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_OPTIONS)])
def test_bad_option_is_refused_before_writing(r, redis_url, name, options):
    options = {"queue": _queue(), **options}
    if "task_id" in options:  # enqueue_many refuses a shared task_id for another reason
        before = _snapshot(r)
        with fastq.Client(redis_url) as client, pytest.raises(fastq.InvalidOptionError, match="'task_id'"):
            client.enqueue(fastq.Task("t"), **options)
        assert _snapshot(r) == before
        return
    _assert_refused(r, redis_url, fastq.Task("t", b"p"), options, name)


BAD_QUEUES = ["a{b", "a}b", "{", "}x", "a b", " a", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a\u00a0b",
              "a\u2028b", "\ud800", "q" * (_validate.MAX_QUEUE_BYTES + 1),
              "\u00e9" * (_validate.MAX_QUEUE_BYTES // 2 + 1)]


@pytest.mark.parametrize("queue", BAD_QUEUES, ids=range(len(BAD_QUEUES)))
def test_bad_queue_name_is_refused_before_writing(r, redis_url, queue):
    _assert_refused(r, redis_url, fastq.Task("t"), {"queue": queue}, "queue")


@pytest.mark.parametrize("queue", BAD_QUEUES, ids=range(len(BAD_QUEUES)))
def test_bad_queue_name_is_refused_by_workers_and_schedulers(queue):
    with pytest.raises(fastq.InvalidOptionError, match="queue"):
        parse_queues({queue: 1})
    with pytest.raises(fastq.InvalidOptionError, match="queue"):
        WorkerConfig(queues={queue: 1, "default": 1})
    with pytest.raises(fastq.InvalidOptionError, match="'queue'"):
        Scheduler().register("@every 1m", fastq.Task("t"), queue=queue)
    with pytest.raises(fastq.InvalidOptionError, match="'queue'"):
        PeriodicTaskConfig("@every 1m", fastq.Task("t"), {"queue": queue})


@pytest.mark.parametrize("spec", ["a b=2,c", "x{y}=1", "ok,\u00e9\u2003x", ["ok", "a\tb"]])
def test_parse_queues_string_spec_rejects_bad_names(spec):
    with pytest.raises(fastq.InvalidOptionError, match="queue name must not contain"):
        parse_queues(spec)


def test_parse_queues_still_strips_around_names():
    assert parse_queues(" a , b=2 ") == {"a": 1, "b": 2}
    assert parse_queues([" a "]) == {"a": 1}


BAD_TYPES = ["a\x00b", "a\nb", "\tx", "a\x1fb", "a\x7fb", "\ud800", "x\udc80y",
             "t" * (_validate.MAX_TYPE_BYTES + 1), "\u00e9" * (_validate.MAX_TYPE_BYTES // 2 + 1)]


@pytest.mark.parametrize("task_type", BAD_TYPES, ids=range(len(BAD_TYPES)))
def test_bad_task_type_is_refused_at_construction(task_type):
    with pytest.raises(fastq.InvalidOptionError, match="type"):
        fastq.Task(task_type)


@pytest.mark.parametrize("task_type", BAD_TYPES, ids=range(len(BAD_TYPES)))
def test_bad_task_type_set_after_construction_is_refused_before_writing(r, redis_url, task_type):
    task = fastq.Task("t")
    task.type = task_type  # or a Task._trusted built from a message another client wrote
    _assert_refused(r, redis_url, task, {"queue": _queue()}, "type")


def test_enqueue_many_checks_every_task_before_the_first_chunk(r, redis_url):
    """A bad type deep in the list: not even the first chunks are written."""
    tasks = [fastq.Task("t", b"%d" % i) for i in range(2500)]
    tasks[2200].type = "bad\x00type"
    before = _snapshot(r)
    with fastq.Client(redis_url, chunk_size=500) as client:
        with pytest.raises(fastq.InvalidOptionError, match="type"):
            client.enqueue_many(tasks, queue=_queue())

    async def main() -> None:
        async with fastq.AsyncClient(redis_url, chunk_size=500) as client:
            with pytest.raises(fastq.InvalidOptionError, match="type"):
                await client.enqueue_many(tasks, queue=_queue(), process_in=60)

    asyncio.run(main())
    assert _snapshot(r) == before


def test_header_that_is_not_utf8_is_refused():
    with pytest.raises(fastq.InvalidOptionError, match="headers"):
        fastq.Task("t", b"", {"k": "\ud800"})
    with pytest.raises(fastq.InvalidOptionError, match="headers"):
        fastq.Task("t", b"", {"\udfff": "v"})


def test_blank_task_type_is_still_a_value_error():
    with pytest.raises(ValueError, match="empty or blank"):
        fastq.Task(" ")
    with pytest.raises(fastq.InvalidOptionError, match="type"):
        fastq.Task("")


# ---------------------------------------------------------------- values at the bounds still work

def test_values_at_the_bounds_are_written(r, redis_url):
    q = "val-bounds"
    top = _validate.MAX_DURATION
    with fastq.Client(redis_url) as client:
        info = client.enqueue(fastq.Task("t" * _validate.MAX_TYPE_BYTES), queue=q, timeout=top, retention=top,
                              unique=top, process_in=top)
        assert info.state == fastq.TaskState.SCHEDULED and info.timeout == top and info.retention == top
        assert info.next_process_at.year > 2100
        last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
        info = client.enqueue(fastq.Task("x"), queue=q, process_at=last, deadline=last)
        assert info.next_process_at == last and info.deadline == last
        info = client.enqueue(fastq.Task("y"), queue=q, process_at=datetime.max.replace(tzinfo=UTC))
        assert info.next_process_at == last  # 23:59:59.999999 is cut to whole seconds, not rounded up
        name = "q:\u00e9-\U0001f600." + "n" * (_validate.MAX_QUEUE_BYTES - 10)
        assert len(name.encode()) == _validate.MAX_QUEUE_BYTES
        assert client.enqueue(fastq.Task("caf\u00e9 \U0001f600 type"), queue=name).queue == name
    assert 0 < r.ttl(f"asynq:{{{q}}}:unique:{'t' * _validate.MAX_TYPE_BYTES}:") <= 2 * top + 5
    assert r.zcard(f"asynq:{{{q}}}:scheduled") == 3
    assert r.llen(f"asynq:{{{name}}}:pending") == 1
    assert WorkerConfig(queues={name: 2, "default": 1}).queues == {name: 2, "default": 1}


# ---------------------------------------------------------------- property tests

DURATION_OPTIONS = ["timeout", "retention", "unique", "process_in"]
durations = st.one_of(
    st.floats(),  # NaN, infinities, subnormals and huge values included
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=_validate.MAX_DURATION - 3, max_value=_validate.MAX_DURATION + 3),
    st.timedeltas(),
)


def _writable(plan) -> None:
    """What the client does with a plan after writing it must not fail either."""
    encode_message(plan.msg)
    _info(plan)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(DURATION_OPTIONS), value=durations)
def test_any_duration_plans_or_raises_invalid_option(name, value):
    try:
        plan = plan_enqueue(fastq.Task("t"), {name: value})
    except fastq.InvalidOptionError as exc:
        assert f"'{name}'" in str(exc)
    else:
        _writable(plan)


offsets = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                                            max_value=timedelta(hours=23, minutes=59)))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["process_at", "deadline"]),
       value=st.datetimes(timezones=st.none() | st.just(UTC) | offsets))
@example(name="process_at", value=FAR)
@example(name="deadline", value=datetime.max.replace(tzinfo=UTC))
@example(name="deadline", value=datetime.min)
def test_any_datetime_plans_or_raises_invalid_option(name, value):
    try:
        plan = plan_enqueue(fastq.Task("t"), {name: value})
    except fastq.InvalidOptionError as exc:
        assert f"'{name}'" in str(exc)
    else:
        _writable(plan)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(DURATION_OPTIONS), value=durations)
def test_any_duration_is_written_or_refused_without_writing(r, redis_url, name, value):
    q = _queue()
    before = _snapshot(r)
    with fastq.Client(redis_url) as client:
        try:
            client.enqueue(fastq.Task("t"), queue=q, **{name: value})
        except fastq.InvalidOptionError as exc:
            assert f"'{name}'" in str(exc)
            assert _snapshot(r) == before
        else:
            assert r.exists(f"asynq:{{{q}}}:pending", f"asynq:{{{q}}}:scheduled") == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queue=st.text(max_size=40), task_type=st.text(max_size=40))
def test_any_text_is_written_or_refused_without_writing(r, redis_url, queue, task_type):
    before = _snapshot(r)
    try:
        task = fastq.Task(task_type)
    except fastq.InvalidOptionError as exc:
        assert "type" in str(exc)
        return
    with fastq.Client(redis_url) as client:
        try:
            infos = client.enqueue_many([task], queue=queue)
        except fastq.InvalidOptionError as exc:
            assert "'queue'" in str(exc)
            assert _snapshot(r) == before
            return
    assert infos[0].queue == queue and infos[0].type == task_type
    assert r.llen(f"asynq:{{{queue}}}:pending".encode()) >= 1
    assert queue.encode() in r.smembers("asynq:queues")


def test_single_enqueue_encodes_before_it_writes_anything(r, redis_url):
    """A task broken after it was checked (here: a header that is not UTF-8) fails in the
    encoder, before even the ``asynq:queues`` SADD."""
    task = fastq.Task("t")
    task.headers = {"k": "\ud800"}
    before = _snapshot(r)
    with fastq.Client(redis_url) as client, pytest.raises(UnicodeEncodeError):
        client.enqueue(task, queue=_queue())

    async def main() -> None:
        async with fastq.AsyncClient(redis_url) as client:
            with pytest.raises(UnicodeEncodeError):
                await client.enqueue(task, queue=_queue())

    asyncio.run(main())
    assert _snapshot(r) == before
