"""fastq.App, producer side: decorated tasks, their JSON payload, options, enqueue_many, eager
mode, retry policies as functions. Everything that writes goes to the test session's real Redis.
The worker side (receipt, retries, results) is in tests/test_app_worker.py."""
from __future__ import annotations

import asyncio
import enum
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Optional

import pydantic
import pytest

import fastq
from fastq import keys
from fastq._codec import decode_message
from fastq.app import DEFAULT_RESULT_RETENTION
from fastq.errors import InvalidOptionError, PayloadError, TaskArgumentError
from fastq.testing import MemoryResults, arun_handler, run_handler


@dataclass
class Address:
    city: str
    zip: str = ""


@dataclass
class User:
    email: str
    since: datetime
    address: Optional[Address] = None


class Order(pydantic.BaseModel):
    sku: str
    qty: int = pydantic.Field(gt=0)


class Opaque:
    pass


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def stored(r, ref) -> Any:
    """The message of ``ref`` as written to Redis."""
    return decode_message(r.hget(keys.task_key(ref.queue, ref.id), "msg"))


@pytest.fixture
def app(redis_url):
    application = fastq.App(redis_url)
    yield application
    application.close()


# ------------------------------------------------------------------ payload by signature

def test_payload_is_a_json_object_by_parameter_name(app, r):
    @app.task(name="user:welcome", queue="emails")
    def welcome(user: User, order: Order, when: datetime, ids: list[uuid.UUID], color: Color = Color.RED,
                note: Optional[str] = None) -> None:
        pass

    when = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    uid = uuid.UUID(int=7)
    ref = welcome.enqueue(User("a@b.c", when, Address("Oslo")), Order(sku="x1", qty=2), when=when, ids=[uid],
                          note="hi")
    assert isinstance(ref, fastq.TaskRef) and ref.queue == "emails" and ref.type == "user:welcome"
    assert ref.info.state == fastq.TaskState.PENDING and not ref.eager
    msg = stored(r, ref)
    assert msg.type == "user:welcome" and msg.queue == "emails"
    # only the arguments given are written: color takes its default when the task runs
    assert json.loads(msg.payload) == {
        "user": {"email": "a@b.c", "since": "2024-05-01T10:00:00Z", "address": {"city": "Oslo", "zip": ""}},
        "order": {"sku": "x1", "qty": 2}, "when": "2024-05-01T10:00:00Z", "ids": [str(uid)], "note": "hi"}
    # and back: what a worker gives the function
    args, kwargs = welcome.signature.load_args(msg.payload)
    assert args == [] and kwargs == {"user": User("a@b.c", when, Address("Oslo")), "order": Order(sku="x1", qty=2),
                                     "when": when, "ids": [uid], "note": "hi"}


@pytest.mark.parametrize("call, field, reason", [
    ((1, "s"), "to", "expected str, got int"),
    (("a", 2), "subject", "expected str, got int"),
    (("a",), "subject", "missing required argument"),
    (("a", "s", "x", "y"), "", "takes 3 positional argument(s) but 4 were given"),
])
def test_bad_positional_arguments_name_the_parameter_and_write_nothing(app, r, call, field, reason):
    @app.task(name="email:send")
    def send(to: str, subject: str, retries: int = 0) -> None:
        pass

    with pytest.raises(TaskArgumentError) as err:
        send.enqueue(*call)
    assert err.value.field == field and err.value.reason == reason and err.value.task_type == "email:send"
    assert str(err.value).startswith("email:send arguments: ")
    assert isinstance(err.value, TypeError) and isinstance(err.value, PayloadError)
    assert r.dbsize() == 0


@pytest.mark.parametrize("kwargs, field, reason", [
    ({"to": "a", "subject": "s", "cc": "x"}, "cc", "unexpected keyword argument (the task has: to, subject, user)"),
    ({"to": "a", "subject": "s", "user": "nobody"}, "user", "expected User, got str"),
    ({"to": "a", "subject": "s", "user": User("a", "yesterday")}, "user.since",  # type: ignore[arg-type]
     "expected datetime, got str"),
    ({"to": "a", "subject": "s", "user": User("a", datetime.now(), Address(5))}, "user.address.city",  # type: ignore
     "expected str, got int"),
])
def test_bad_keyword_arguments_name_the_parameter_and_write_nothing(app, r, kwargs, field, reason):
    @app.task(name="email:send")
    async def send(to: str, subject: str, user: Optional[User] = None) -> None:
        pass

    with pytest.raises(TaskArgumentError) as err:
        send.enqueue(**kwargs)
    assert (err.value.field, err.value.reason) == (field, reason)
    assert f"parameter {field!r}" in str(err.value)
    with pytest.raises(TaskArgumentError):
        asyncio.run(send.aenqueue(**kwargs))
    assert r.dbsize() == 0


def test_positional_only_and_duplicate_arguments(app, r):
    @app.task(name="po")
    def po(a: int, /, b: int = 2) -> None:
        pass

    with pytest.raises(TaskArgumentError, match="parameter 'a': is positional-only"):
        po.enqueue(a=1)
    with pytest.raises(TaskArgumentError, match="parameter 'b': got multiple values"):
        po.enqueue(1, 2, b=3)  # type: ignore[misc]
    ref = po.enqueue(1, b=5)
    assert json.loads(stored(r, ref).payload) == {"a": 1, "b": 5}
    assert po.signature.load_args(b'{"a": 1, "b": 5}') == ([1], {"b": 5})


def test_a_pydantic_parameter_is_validated_by_its_model(app, r):
    @app.task(name="order:place")
    def place(order: Order) -> None:
        pass

    with pytest.raises(TaskArgumentError, match="parameter 'order': expected Order, got dict"):
        place.enqueue({"sku": "x", "qty": 1})  # type: ignore[arg-type]
    with pytest.raises(PayloadError) as err:  # on receipt: the model's own validation
        place.signature.load_args(b'{"order": {"sku": "x", "qty": 0}}')
    assert err.value.field == "order.qty" and "greater than 0" in err.value.reason
    assert r.dbsize() == 0


def test_functions_that_cannot_be_tasks_are_refused_when_decorated(app):
    with pytest.raises(TypeError, match=r"parameter 'args' is \*args or \*\*kwargs"):
        app.task(name="a")(lambda *args: None)
    with pytest.raises(TypeError, match=r"parameter 'kw' is \*args or \*\*kwargs"):
        @app.task(name="b")
        def b(x: int, **kw: Any) -> None: ...

    with pytest.raises(TypeError, match="parameter 'o': .*Opaque is not supported"):
        @app.task(name="c")
        def c(o: Opaque) -> None: ...

    with pytest.raises(TypeError, match="return annotation: .*Opaque is not supported"):
        @app.task(name="d")
        def d() -> Opaque: ...

    with pytest.raises(TypeError, match="cannot resolve the annotations"):
        @app.task(name="e")
        def e(x: "Missing") -> None: ...  # type: ignore[name-defined]  # noqa: F821

    @app.task(name="dup")
    def first() -> None: ...

    with pytest.raises(ValueError, match="a task named 'dup' is registered already"):
        app.task(name="dup")(lambda: None)
    with pytest.raises(TypeError, match="decorates a function, not int"):
        app.task(name="f")(5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="is an App task already"):
        app.task(name="g")(first)
    assert set(app.tasks) == {"dup"}  # nothing half-registered


@pytest.mark.parametrize("options, error, match", [
    ({"queue": "bad queue"}, InvalidOptionError, "queue"),
    ({"max_retry": -1}, InvalidOptionError, "max_retry"),
    ({"timeout": "soon"}, InvalidOptionError, "timeout"),
    ({"retention": -5}, InvalidOptionError, "retention"),
    ({"name": "  "}, InvalidOptionError, "task type"),
    ({"retry_on": "IOError"}, InvalidOptionError, "retry_on must be an exception type"),
    ({"retry_on": (IOError, int)}, InvalidOptionError, "retry_on must be an exception type"),
    ({"retry_backoff": 5}, InvalidOptionError, "retry_backoff must be a fastq.Backoff or a callable"),
])
def test_bad_task_options_are_refused_when_decorated(app, options, error, match):
    options = {"name": "t", **options}
    with pytest.raises(error, match=match):
        app.task(**options)(lambda: None)
    assert app.tasks == {}


def test_default_name_default_options_and_plain_call(app, r):
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="async:add", max_retry=3, timeout=20, retention=60)
    async def aadd(a: int, b: int) -> int:
        return a + b

    @app.task(name="log")
    def log_line(line: str) -> None:
        pass

    @app.task(name="untyped")
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    assert add.name == f"{__name__}.test_default_name_default_options_and_plain_call.<locals>.add"
    assert add(2, 3) == 5 and asyncio.run(aadd(2, 3)) == 5  # a plain call runs the function
    assert add.__name__ == "add" and add.__wrapped__ is add.fn
    ref = add.enqueue(1, 2)
    msg = stored(r, ref)
    # a task that returns something is kept an hour with its result; -> None keeps Asynq's 0
    assert (msg.queue, msg.retry, msg.timeout, msg.retention) == ("default", 25, 1800, DEFAULT_RESULT_RETENTION)
    assert DEFAULT_RESULT_RETENTION == 3600
    msg = stored(r, aadd.enqueue(1, 2))
    assert (msg.retry, msg.timeout, msg.retention) == (3, 20, 60)
    assert stored(r, log_line.enqueue("x")).retention == 0
    assert stored(r, untyped.enqueue([1, "a"])).retention == 0  # unannotated: nothing promised, nothing kept
    assert app.tasks == {add.name: add, "async:add": aadd, "log": log_line, "untyped": untyped}
    assert app.queues() == {"default": 1}


def test_options_per_call(app, r):
    @app.task(name="report", queue="reports", max_retry=4)
    def report(day: str) -> None:
        pass

    low = report.options(queue="low", process_in=3600)
    ref = low.enqueue("mon")
    assert ref.queue == "low" and ref.info.state == fastq.TaskState.SCHEDULED
    assert r.zscore(keys.scheduled_key("low"), ref.id) == pytest.approx(time.time() + 3600, abs=5)
    assert stored(r, ref).retry == 4  # the task's defaults stay under the call's options
    ref = low.options(task_id="report-mon", process_in=None).enqueue("mon")  # options merge, later ones win
    assert (ref.id, ref.queue, ref.info.state) == ("report-mon", "low", fastq.TaskState.PENDING)
    ref = report.enqueue("tue")  # the task itself is unchanged
    assert ref.queue == "reports"
    with pytest.raises(TypeError, match="unknown enqueue option 'queu'"):
        report.options(queu="x")
    with pytest.raises(InvalidOptionError, match="process_in"):
        report.options(process_in=-1)
    with pytest.raises(TaskArgumentError, match="parameter 'day'"):
        low.enqueue(3)  # type: ignore[arg-type]
    assert r.zcard(keys.scheduled_key("low")) == 1


def test_enqueue_many_takes_tuples_and_dicts_on_the_batch_path(app, r):
    @app.task(name="email:send", queue="bulk")
    def send(to: str, subject: str = "") -> None:
        pass

    refs = send.enqueue_many([("a@b.c", "hi"), {"to": "x@y.z"}])
    assert [json.loads(stored(r, ref).payload) for ref in refs] == [{"to": "a@b.c", "subject": "hi"}, {"to": "x@y.z"}]
    send.enqueue_many([("warm-up",)])  # the script is loaded; count from here
    r.config_resetstat()
    refs = send.options(queue="bulk").enqueue_many((f"u{i}@x", "s") for i in range(2500))
    assert len(refs) == 2500 and len({ref.id for ref in refs}) == 2500
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 3  # one script call per 1,000 tasks
    assert r.llen(keys.pending_key("bulk")) == 2503
    assert send.enqueue_many([]) == []


def test_enqueue_many_checks_every_call_before_writing(app, r):
    @app.task(name="email:send")
    def send(to: str, subject: str = "") -> None:
        pass

    with pytest.raises(TaskArgumentError) as err:
        send.enqueue_many([("a",), ("b",), {"to": 3}])
    assert err.value.index == 2 and err.value.field == "to"
    assert str(err.value) == "email:send arguments: item 2: parameter 'to': expected str, got int"
    with pytest.raises(TypeError, match="item 1 is a list; give a tuple of positional arguments or a dict"):
        send.enqueue_many([("a",), ["b"]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="takes an iterable of calls"):
        send.enqueue_many({"to": "a"})
    with pytest.raises(TypeError, match="task_id"):
        send.options(task_id="same").enqueue_many([("a",), ("b",)])
    assert r.dbsize() == 0


def test_aenqueue_and_aenqueue_many(app, r):
    @app.task(name="ping", queue="pings")
    async def ping(n: int) -> int:
        return n

    async def main() -> list[fastq.TaskRef]:
        one = await ping.aenqueue(1)
        many = await ping.options(queue="other").aenqueue_many([(2,), {"n": 3}])
        await app.aclose()
        return [one, *many]

    refs = asyncio.run(main())
    assert [ref.queue for ref in refs] == ["pings", "other", "other"]
    assert [json.loads(stored(r, ref).payload)["n"] for ref in refs] == [1, 2, 3]

    async def again() -> str:
        try:
            return (await ping.aenqueue(4)).queue
        finally:
            await app.aclose()

    assert asyncio.run(again()) == "pings"  # a new loop gets its own client


def test_app_settings_are_checked(redis_url):
    with pytest.raises(InvalidOptionError, match="unknown=.*'retry' or 'archive'"):
        fastq.App(redis_url, unknown="drop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown setting 'concurency'"):
        fastq.App(redis_url, concurency=5)
    with pytest.raises(TypeError, match="unknown setting 'retry_delay'.*retry_backoff"):
        fastq.App(redis_url, retry_delay=lambda *a: 1)
    with pytest.raises(InvalidOptionError, match="concurrency"):
        fastq.App(redis_url, concurrency=0)
    with pytest.raises(TypeError, match="Redis URL"):
        fastq.App(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="retry_backoff"):
        fastq.App(redis_url, retry_backoff="fast")  # type: ignore[arg-type]


def test_the_redis_url_comes_from_the_environment_when_not_given(redis_url, r, monkeypatch):
    monkeypatch.setenv("FASTQ_REDIS_URL", redis_url)
    app = fastq.App()

    @app.task(name="env")
    def env() -> None:
        pass

    ref = env.enqueue()
    assert r.exists(keys.task_key("default", ref.id))
    assert app.worker_config().redis_url == redis_url
    app.close()


# ------------------------------------------------------------------ worker settings and the mux

def test_worker_config_carries_the_apps_settings(redis_url):
    hooks = [object()]

    def on_error(*args: Any) -> None:
        pass

    app = fastq.App(redis_url, concurrency=7, hooks=hooks, error_handler=on_error,
                    is_failure=lambda exc: True)

    @app.task(name="a", queue="emails")
    def a() -> None: ...

    @app.task(name="b", queue="reports")
    def b() -> None: ...

    cfg = app.worker_config()
    assert cfg.queues == {"default": 1, "emails": 1, "reports": 1}
    assert (cfg.concurrency, cfg.hooks, cfg.error_handler, cfg.redis_url) == (7, hooks, on_error, redis_url)
    assert cfg.retry_delay == app.retry_delay
    cfg = app.worker_config(queues={"emails": 3}, concurrency=2)
    assert cfg.queues == {"emails": 3} and cfg.concurrency == 2
    app2 = fastq.App(redis_url, queues="emails=5,low=1")
    assert app2.worker_config().queues == {"emails": 5, "low": 1}
    with pytest.raises(InvalidOptionError):
        fastq.App(redis_url, queues="emails=0")
    mux, cfg = app.worker_parts()
    assert mux is app.mux and cfg.queues == app.queues()


def test_include_and_middleware(app):
    calls: list[str] = []

    def tag(name: str) -> Any:
        def middleware(handler: Any) -> Any:
            def wrapped(task: fastq.Task) -> Any:
                calls.append(name)
                return handler(task)
            return wrapped
        return middleware

    legacy = fastq.ServeMux()
    legacy.use(tag("legacy"))

    @legacy.handle("report:")
    def report(task: fastq.Task) -> bytes:
        return b"report " + task.type.encode()

    @app.task(name="double")
    def double(n: int) -> int:
        return 2 * n

    app.use(tag("app"))
    app.include(legacy)
    assert run_handler(app, fastq.Task("report:daily")) == b"report report:daily"
    assert calls == ["app", "legacy"]
    assert run_handler(app.mux, fastq.Task("double", b'{"n": 4}')) == b"8"
    assert calls == ["app", "legacy", "app"]
    clash = fastq.ServeMux()
    clash.handle("double", lambda task: None)
    with pytest.raises(ValueError, match="already has a handler for 'double'"):
        app.include(clash)
    with pytest.raises(TypeError, match="include\\(\\) takes a fastq.ServeMux"):
        app.include(object())  # type: ignore[arg-type]


def test_unknown_task_types_are_archived_or_left_to_retry(redis_url):
    archive = fastq.App(redis_url, unknown="archive")
    with pytest.raises(fastq.SkipRetry) as err:
        run_handler(archive, fastq.Task("nobody:home"))
    assert str(err.value) == ("handler not found for task 'nobody:home' (unknown task types are archived: "
                              "App(unknown='archive')): skip retry for the task")
    assert isinstance(err.value.__cause__, fastq.HandlerNotFoundError)
    with pytest.raises(fastq.HandlerNotFoundError):  # the default: Asynq's (retried)
        run_handler(fastq.App(redis_url), fastq.Task("nobody:home"))


# ------------------------------------------------------------------ eager mode

def test_eager_runs_the_task_at_enqueue_through_the_payload_and_the_wrapper(app, r):
    seen: list[Any] = []

    @app.task(name="user:greet")
    def greet(user: User, times: int = 1) -> dict[str, Any]:
        seen.append((user, fastq.get_task_id(), fastq.get_queue_name()))
        return {"text": f"hi {user.email}" * times, "at": user.since.isoformat()}

    @app.task(name="raw")
    async def raw() -> bytes:
        return b"\x00raw"

    @app.task(name="fail", retry_on=(IOError,))
    def fail(kind: str) -> None:
        raise ValueError("boom") if kind == "value" else OSError("disk")

    since = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with app.eager():
        assert app.is_eager
        ref = greet.options(queue="q1").enqueue(User("a@b.c", since), times=2)
        assert ref.eager and ref.value == {"text": "hi a@b.chi a@b.c", "at": since.isoformat()}
        assert ref.info.state == fastq.TaskState.COMPLETED and ref.queue == "q1"
        assert json.loads(ref.info.result) == ref.value
        assert seen == [(User("a@b.c", since), ref.id, "q1")]  # a decoded copy, in a task context
        assert raw.enqueue().value == b"\x00raw"  # bytes stay raw
        with pytest.raises(ValueError, match="boom"):  # the function's own exception, not SkipRetry
            fail.enqueue("value")
        with pytest.raises(OSError, match="disk"):
            fail.enqueue("io")
        with pytest.raises(TaskArgumentError, match="parameter 'user'"):
            greet.enqueue("a@b.c")  # type: ignore[arg-type]
        refs = greet.enqueue_many([(User("x@y", since),), {"user": User("z@y", since)}])
        assert [ref.value["text"] for ref in refs] == ["hi x@y", "hi z@y"]
    assert not app.is_eager
    assert r.dbsize() == 0  # nothing was written
    ref = greet.enqueue(User("a@b.c", since))
    with pytest.raises(AttributeError, match="was enqueued to Redis, not run eagerly"):
        ref.value  # noqa: B018


def test_eager_in_async_code_and_nested_enqueues(app, r):
    order: list[str] = []

    @app.task(name="child")
    def child(n: int) -> int:
        order.append(f"child {n} of {fastq.get_parent_task_id()}")
        return n * 10

    @app.task(name="parent")
    async def parent(n: int) -> int:
        order.append("parent")
        return (await child.aenqueue(n)).value + 1

    async def main() -> fastq.TaskRef:
        with app.eager():
            return await parent.aenqueue(4)

    ref = asyncio.run(main())
    assert ref.value == 41 and order == ["parent", f"child 4 of {ref.id}"]
    assert r.dbsize() == 0


def test_run_handler_keeps_what_result_writer_writes(app):
    @app.task(name="progress")
    def progress(steps: int) -> str:
        for i in range(steps):
            fastq.result_writer().write(b"step %d" % i)
        return "done"

    @app.task(name="aprogress")
    async def aprogress() -> None:
        await fastq.result_writer().awrite(b"half")

    store = MemoryResults()
    task = fastq.Task("progress", b'{"steps": 3}')
    assert run_handler(app, task, task_id="t1", results=store) == b'"done"'
    assert store.written == {"t1": b"step 2"}
    assert run_handler(app, fastq.Task("aprogress"), task_id="t2", results=store) is None
    assert store.written == {"t1": b"step 2", "t2": b"half"}
    assert asyncio.run(arun_handler(app, task, task_id="t3", results=store)) == b'"done"'
    assert store.written["t3"] == b"step 2"
    store.close()
    assert run_handler(app, task) == b'"done"'  # a private store by default
    with pytest.raises(TypeError, match="results must be a fastq.testing.MemoryResults"):
        run_handler(app, task, results={})  # type: ignore[arg-type]


def test_a_bad_payload_or_result_archives_with_the_reason(app):
    @app.task(name="sum")
    def total(values: list[int], label: Literal["a", "b"] = "a") -> int:
        return "not an int" if label == "b" else sum(values)  # type: ignore[return-value]

    cases = {
        b'{"values": [1, "2"]}': "sum payload: field 'values[1]': expected an integer, got a string '2'",
        b'{"values": [1], "extra": 1}': "sum payload: field 'extra': unknown parameter (the task has: values, label)",
        b'{}': "sum payload: field 'values': missing",
        b'[1, 2]': "sum payload: expected a JSON object of the task's arguments by parameter name, got list",
        b'{"values": ': "sum payload: not valid JSON",
        b'{"values": [1], "label": "c"}': "sum payload: field 'label': 'c' is not one of 'a', 'b'",
    }
    for payload, text in cases.items():
        with pytest.raises(fastq.SkipRetry) as err:
            run_handler(app, fastq.Task("sum", payload))
        assert str(err.value).startswith(text), (payload, str(err.value))
        assert isinstance(err.value.__cause__, PayloadError)
    with pytest.raises(fastq.SkipRetry, match="returned a value that cannot be stored as JSON by its return "
                                              "annotation: expected int, got str"):
        run_handler(app, fastq.Task("sum", b'{"values": [1], "label": "b"}'))
    assert run_handler(app, fastq.Task("sum", b'{"values": [1, 2]}')) == b"3"


# ------------------------------------------------------------------ retry policies

def test_backoff_delays():
    policy = fastq.Backoff(base=1, factor=2, max=600, jitter=0)
    assert [policy(n, ValueError()) for n in range(12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert policy(10_000) == 600  # no overflow
    assert fastq.Backoff(base=5, factor=1, jitter=0).delay(7) == 5
    jittered = fastq.Backoff(base=100, factor=1, jitter=0.2)
    samples = [jittered(0) for _ in range(200)]
    assert all(80 <= s <= 100 for s in samples) and len(set(samples)) > 1
    for kwargs, match in [({"base": -1}, "base must be at least 0"), ({"factor": 0.5}, "factor must be at least 1"),
                          ({"jitter": 1.5}, "jitter must be at least 0 and at most 1"),
                          ({"max": float("nan")}, "max must be a finite number"), ({"base": "1"}, "finite number")]:
        with pytest.raises(InvalidOptionError, match=match):
            fastq.Backoff(**kwargs)


def test_retry_delay_dispatches_on_the_task_type(redis_url, caplog):
    app = fastq.App(redis_url, retry_backoff=fastq.Backoff(base=7, factor=1, jitter=0))

    @app.task(name="fixed", retry_backoff=fastq.Backoff(base=3, factor=3, jitter=0))
    def fixed() -> None: ...

    @app.task(name="custom", retry_backoff=lambda n, exc: 99 if isinstance(exc, KeyError) else n)
    def custom() -> None: ...

    @app.task(name="broken", retry_backoff=lambda n, exc: -1)
    def broken() -> None: ...

    @app.task(name="plain")
    def plain() -> None: ...

    def delay(task_type: str, retried: int = 0, exc: Optional[BaseException] = None) -> float:
        return app.retry_delay(retried, exc or ValueError(), fastq.Task(task_type))

    assert [delay("fixed", n) for n in range(3)] == [3, 9, 27]
    assert delay("custom", 5, KeyError()) == 99 and delay("custom", 5) == 5
    assert delay("plain", 3) == 7 and delay("some:other:type") == 7  # the App's policy
    assert delay("fixed", 2, fastq.Retry(in_=30)) == 30  # Retry(in_) wins
    assert delay("fixed", 2, fastq.Retry(in_=timedelta(minutes=2))) == 120
    assert delay("fixed", 1, fastq.Retry()) == 9  # no delay given: the policy's
    assert 15 <= delay("broken") <= 45 and "retry_backoff of task type 'broken' failed" in caplog.text
    plain_app = fastq.App(redis_url)
    assert 15 <= plain_app.retry_delay(0, ValueError(), fastq.Task("x")) <= 45  # Asynq's default


def test_retry_and_task_failed_error():
    assert str(fastq.Retry(in_=30)) == "retry in 30s" and fastq.Retry(in_=30).in_ == 30.0
    assert str(fastq.Retry(reason="rate limited")) == "rate limited (retry requested)"
    assert fastq.Retry().in_ is None
    for bad in (-1, float("inf"), "30", True):
        with pytest.raises(InvalidOptionError, match="Retry\\(in_=...\\)"):
            fastq.Retry(in_=bad)  # type: ignore[arg-type]
    err = fastq.TaskFailedError("id-1", "emails", "ValueError: boom")
    assert (err.task_id, err.queue, err.error, err.state) == ("id-1", "emails", "ValueError: boom", "archived")
    assert str(err) == "task 'id-1' in queue 'emails' is archived: ValueError: boom"
    assert isinstance(err, fastq.FastqError)
