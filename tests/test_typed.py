"""fastq.typed: payload schemas (dataclasses, pydantic), JSON on the wire, archive on a bad payload."""
from __future__ import annotations

import asyncio
import enum
import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Literal, Optional, Union

import pytest
from helpers import RunningWorker, async_wait_for

import fastq
from fastq import keys
from fastq._codec import decode_message
from fastq.errors import PayloadError
from fastq.testing import run_handler, task_context
from fastq.typed import TaskType, decode_payload, encode_payload, make_task, typed_task


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclass
class Address:
    city: str
    zip: Optional[str] = None


@dataclass
class EmailPayload:
    to: str
    user_id: int


@dataclass
class Everything:
    name: str
    count: int
    ratio: float
    ok: bool
    blob: bytes
    when: datetime
    day: date
    ref: uuid.UUID
    priority: Priority
    mode: Literal["a", "b"]
    address: Address
    tags: list[str]
    pair: tuple[int, str]
    scores: dict[str, float]
    either: Union[int, str]
    extra: Any = None
    maybe: Optional[Address] = None
    many: tuple[int, ...] = ()
    notes: list[Address] = field(default_factory=list)


EVERYTHING = Everything(
    name="ünï", count=3, ratio=0.5, ok=True, blob=b"\x00\xff", when=datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    day=date(2024, 5, 6), ref=uuid.UUID("12345678-1234-5678-1234-567812345678"), priority=Priority.HIGH, mode="b",
    address=Address("Oslo"), tags=["x", "y"], pair=(1, "one"), scores={"m": 1.25}, either="s",
    extra={"k": [1, None]}, maybe=None, many=(1, 2), notes=[Address("Bergen", "5003")],
)


def test_round_trip_of_every_supported_type_and_the_json_layout():
    kind = TaskType("kitchen:sink", Everything)
    task = kind(EVERYTHING)
    assert isinstance(task, fastq.Task) and task.type == "kitchen:sink"
    assert json.loads(task.payload) == {  # what Go's encoding/json writes for the same struct
        "name": "ünï", "count": 3, "ratio": 0.5, "ok": True, "blob": "AP8=",
        "when": "2024-05-06T07:08:09Z", "day": "2024-05-06", "ref": "12345678-1234-5678-1234-567812345678",
        "priority": "high", "mode": "b", "address": {"city": "Oslo", "zip": None}, "tags": ["x", "y"],
        "pair": [1, "one"], "scores": {"m": 1.25}, "either": "s", "extra": {"k": [1, None]}, "maybe": None,
        "many": [1, 2], "notes": [{"city": "Bergen", "zip": "5003"}],
    }
    assert b" " not in task.payload.replace("ünï".encode(), b"")  # compact
    assert kind.decode(task.payload) == EVERYTHING


def test_decoding_accepts_go_style_times_and_missing_defaults():
    kind = TaskType("k", Everything)
    data = json.loads(kind.encode(EVERYTHING))
    data["when"] = "2024-05-06T07:08:09Z"  # Go's time.Time JSON
    for name in ("extra", "maybe", "many", "notes"):
        del data[name]
    decoded = kind.decode(json.dumps(data).encode())
    assert decoded.when == EVERYTHING.when and decoded.notes == [] and decoded.many == () and decoded.extra is None


BAD_PAYLOADS = [
    (b'{"to":"a@x"}', "user_id", "email:deliver payload: field 'user_id': missing"),
    (b'{"to":"a@x","user_id":"42"}', "user_id", "field 'user_id': expected an integer, got a string '42'"),
    (b'{"to":"a@x","user_id":true}', "user_id", "expected an integer, got a boolean"),
    (b'{"to":"a@x","user_id":4.5}', "user_id", "expected an integer, got a number"),
    (b'{"to":null,"user_id":1}', "to", "field 'to': expected a string, got null"),
    (b'{"to":"a","user_id":1,"cc":"b"}', "cc", "field 'cc': unknown field (the schema EmailPayload has: to, user_id)"),
    (b'[1,2]', "", "email:deliver payload: expected an object, got an array"),
    (b'not json', "", "email:deliver payload: not valid JSON (Expecting value"),
    (b'', "", "email:deliver payload: empty; expected a JSON object for EmailPayload"),
    (b'{"to":"a","user_id":NaN}', "", "NaN is not valid JSON"),
    (b'\xff\xfe\x00', "", "not valid JSON"),
]


@pytest.mark.parametrize("data, path, message", BAD_PAYLOADS)
def test_bad_payloads_name_the_field(data, path, message):
    kind = TaskType("email:deliver", EmailPayload)
    with pytest.raises(PayloadError) as caught:
        kind.decode(data)
    assert message in str(caught.value)
    assert caught.value.field == path and caught.value.task_type == "email:deliver"
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, fastq.FastqError)


NESTED_BAD = [
    ("address", {"zip": "1"}, "address.city", "missing"),
    ("address", {"city": "x", "street": "y"}, "address.street", "unknown field (the schema Address has: city, zip)"),
    ("tags", ["a", 2], "tags[1]", "expected a string, got a number"),
    ("notes", [{"city": "a"}, {"city": 1}], "notes[1].city", "expected a string, got a number"),
    ("scores", {"m": "high"}, "scores['m']", "expected a number, got a string"),
    ("pair", [1], "pair", "expected an array of 2 items, got 1"),
    ("priority", "urgent", "priority", "'urgent' is not one of 'low', 'high'"),
    ("mode", "c", "mode", "'c' is not one of 'a', 'b'"),
    ("blob", "***", "blob", "not valid base64"),
    ("when", "yesterday", "when", "not a valid datetime: 'yesterday'"),
    ("ref", "nope", "ref", "not a valid UUID: 'nope'"),
    ("either", 1.5, "either", "a number matches none of int, str"),
    ("ok", "true", "ok", "expected a boolean, got a string"),
]


@pytest.mark.parametrize("name, value, path, reason", NESTED_BAD)
def test_bad_nested_values_name_the_path(name, value, path, reason):
    kind = TaskType("k", Everything)
    data = json.loads(kind.encode(EVERYTHING))
    data[name] = value
    with pytest.raises(PayloadError) as caught:
        kind.decode(json.dumps(data).encode())
    assert caught.value.field == path and caught.value.reason == reason


def test_post_init_checks_reject_a_payload():
    @dataclass
    class Positive:
        n: int

        def __post_init__(self):
            if self.n <= 0:
                raise ValueError("n must be positive")

    with pytest.raises(PayloadError, match="rejected by Positive: n must be positive"):
        TaskType("p", Positive).decode(b'{"n":0}')


ENCODE_BAD = [
    (EmailPayload("a", "42"), "user_id", "expected int, got str"),
    (EmailPayload("a", True), "user_id", "expected int, got bool"),
    (EmailPayload(None, 1), "to", "expected str, got NoneType"),
]


@pytest.mark.parametrize("obj, path, reason", ENCODE_BAD)
def test_encoding_checks_the_object_against_the_schema(obj, path, reason):
    with pytest.raises(PayloadError) as caught:
        TaskType("email:deliver", EmailPayload)(obj)
    assert caught.value.field == path and caught.value.reason == reason


def test_encoding_refuses_other_objects_and_non_json_values():
    kind = TaskType("email:deliver", EmailPayload)
    with pytest.raises(PayloadError, match="expected a EmailPayload, got dict"):
        kind({"to": "a", "user_id": 1})
    bad = EVERYTHING.__class__(**{**EVERYTHING.__dict__, "ratio": float("nan")})
    with pytest.raises(PayloadError, match="field 'ratio': nan cannot be written as JSON"):
        TaskType("k", Everything).encode(bad)
    odd = EVERYTHING.__class__(**{**EVERYTHING.__dict__, "extra": {1, 2}})
    with pytest.raises(PayloadError, match="field 'extra': set is not a JSON value"):
        TaskType("k", Everything).encode(odd)


def test_schema_errors_are_reported_when_the_type_is_declared():
    @dataclass
    class WithSet:
        ids: set[int]

    @dataclass
    class IntKeys:
        m: dict[int, str]

    @dataclass
    class Unresolvable:
        x: "NoSuchType"  # noqa: F821

    with pytest.raises(TypeError, match="field 'ids': type set.* is not supported"):
        TaskType("k", WithSet)
    with pytest.raises(TypeError, match="field 'm': dict keys must be str"):
        TaskType("k", IntKeys)
    with pytest.raises(TypeError, match="cannot resolve the annotations of Unresolvable"):
        TaskType("k", Unresolvable)
    with pytest.raises(TypeError, match="must be a dataclass or a pydantic model class"):
        TaskType("k", dict)
    with pytest.raises(TypeError, match="must be a dataclass or a pydantic model class"):
        TaskType("k", EmailPayload("a", 1))  # an instance, not the class
    with pytest.raises(ValueError, match="task type must be a non-blank str"):
        TaskType(" ", EmailPayload)


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


def test_self_referencing_schema():
    kind = TaskType("tree", Node)
    tree = Node("a", [Node("b"), Node("c", [Node("d")])])
    assert kind.decode(kind.encode(tree)) == tree


# ------------------------------------------------------------------ handlers

def test_typed_task_registers_a_decoding_handler_and_returns_the_function():
    mux = fastq.ServeMux()

    @typed_task(mux, "email:deliver", EmailPayload)
    async def deliver(payload: EmailPayload):
        return payload.user_id, fastq.get_task_id()

    @typed_task(mux, TaskType("email:count", EmailPayload))
    def count(payload: EmailPayload):
        return len(payload.to)

    assert mux.patterns == ["email:count", "email:deliver"]
    with task_context("plain"):  # the function is returned unchanged: callable with a payload object
        assert asyncio.run(deliver(EmailPayload("a", 7))) == (7, "plain")
    task = make_task("email:deliver", EmailPayload("a@x", 42))
    assert run_handler(mux, task, task_id="t1") == (42, "t1")
    assert run_handler(mux, make_task("email:count", EmailPayload("abc", 1))) == 3


def test_a_bad_payload_makes_the_handler_raise_skip_retry():
    EmailTask = TaskType("email:deliver", EmailPayload)
    mux = fastq.ServeMux()
    ran = []

    @EmailTask.handle(mux)
    def deliver(payload):
        ran.append(payload)

    with pytest.raises(fastq.SkipRetry) as caught:
        run_handler(mux, fastq.Task("email:deliver", b'{"to":"a@x"}'))
    assert str(caught.value) == "email:deliver payload: field 'user_id': missing: skip retry for the task"
    assert isinstance(caught.value.__cause__, PayloadError) and ran == []


def test_handler_errors_are_not_mistaken_for_payload_errors():
    mux = fastq.ServeMux()

    @typed_task(mux, "e", EmailPayload)
    def deliver(payload):
        raise KeyError("in the handler")

    with pytest.raises(KeyError):
        run_handler(mux, make_task("e", EmailPayload("a", 1)))


def test_typed_api_bad_input():
    kind = TaskType("e", EmailPayload)
    with pytest.raises(TypeError, match="needs a fastq.ServeMux, not dict"):
        kind.handle({})
    with pytest.raises(TypeError, match="handler is not callable"):
        kind.handler("nope")
    with pytest.raises(TypeError, match="needs a schema"):
        typed_task(fastq.ServeMux(), "e")
    with pytest.raises(TypeError, match="already has a schema"):
        typed_task(fastq.ServeMux(), kind, Address)
    with pytest.raises(TypeError, match="make_task\\(\\) needs a dataclass or pydantic model instance, not bytes"):
        make_task("e", b"raw")
    with pytest.raises(TypeError, match="not dict"):
        make_task("e", {"to": "a"})
    with pytest.raises(TypeError, match="task headers must map str to str"):
        kind(EmailPayload("a", 1), headers={"a": 1})
    assert repr(kind) == "TaskType('e', EmailPayload)"


def test_encode_and_decode_payload_helpers():
    data = encode_payload(EmailPayload("a", 1))
    assert data == b'{"to":"a","user_id":1}'
    assert decode_payload(EmailPayload, data) == EmailPayload("a", 1)
    with pytest.raises(PayloadError, match="task payload: field 'user_id': missing"):
        decode_payload(EmailPayload, b'{"to":"a"}')


def test_plain_bytes_stay_the_default():
    mux = fastq.ServeMux()
    mux.handle("raw", lambda task: task.payload)
    assert run_handler(mux, fastq.Task("raw", b"\x00not json")) == b"\x00not json"


# ------------------------------------------------------------------ pydantic (a dev dependency, never a runtime one)

def test_pydantic_models():
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        sku: str
        qty: int

    class Order(pydantic.BaseModel):
        id: int
        items: list[Item]

    OrderTask = TaskType("order:process", Order)
    order = Order(id=1, items=[Item(sku="a", qty=2)])
    task = OrderTask(order)
    assert json.loads(task.payload) == {"id": 1, "items": [{"sku": "a", "qty": 2}]}
    assert OrderTask.decode(task.payload) == order
    assert make_task("order:process", order).payload == task.payload
    with pytest.raises(PayloadError) as caught:
        OrderTask.decode(b'{"id":1,"items":[{"sku":"a","qty":"many"}]}')
    assert caught.value.field == "items[0].qty" and "integer" in caught.value.reason
    with pytest.raises(PayloadError) as caught:
        OrderTask.decode(b'{"items":[{}]}')
    assert caught.value.field == "id" and "(+2 more errors)" in caught.value.reason
    with pytest.raises(PayloadError, match="order:process payload: Invalid JSON"):
        OrderTask.decode(b"{")
    with pytest.raises(PayloadError, match="expected a Order, got Item"):
        OrderTask(Item(sku="a", qty=1))

    mux = fastq.ServeMux()

    @OrderTask.handle(mux)
    async def process(o: Order):
        return sum(i.qty for i in o.items)

    assert run_handler(mux, task) == 2
    with pytest.raises(fastq.SkipRetry, match="field 'id'"):
        run_handler(mux, fastq.Task("order:process", b'{"items":[]}'))


# ------------------------------------------------------------------ a real worker

def test_worker_archives_a_bad_payload_at_once_and_runs_a_good_one(redis_url, r):
    EmailTask = TaskType("email:deliver", EmailPayload)
    mux = fastq.ServeMux()
    delivered = []

    @EmailTask.handle(mux)
    async def deliver(payload: EmailPayload):
        delivered.append((payload, fastq.get_task_id()))

    with fastq.Client(redis_url) as client:
        good = client.enqueue(EmailTask(EmailPayload("a@x", 42)), max_retry=25)
        bad = client.enqueue(fastq.Task("email:deliver", b'{"to":"a@x","user_id":"42"}'), max_retry=25)

    async def main():
        async with RunningWorker(mux, redis_url):
            await async_wait_for(lambda: r.zcard(keys.archived_key("default")) and delivered, what="outcomes")

    asyncio.run(main())
    assert delivered == [(EmailPayload("a@x", 42), good.id)]
    fields = r.hgetall(keys.task_key("default", bad.id))
    assert fields[b"state"] == b"archived"  # at once: no retry storm
    msg = decode_message(fields[b"msg"])
    assert msg.retried == 0 and msg.retry == 25
    assert msg.error_msg == ("email:deliver payload: field 'user_id': expected an integer, got a string '42': "
                             "skip retry for the task")
    assert r.zcard(keys.retry_key("default")) == 0


def test_drain_fixture_archives_bad_payloads(fastq_client, fastq_worker):
    mux = fastq.ServeMux()

    @typed_task(mux, "email:deliver", EmailPayload)
    def deliver(payload: EmailPayload):
        return payload.to

    ok = fastq_client.enqueue(make_task("email:deliver", EmailPayload("a@x", 1)))
    bad = fastq_client.enqueue(fastq.Task("email:deliver", b'{"user_id":1}'))
    result = fastq_worker(mux).drain()
    assert result.succeeded == [ok.id] and result.archived == [bad.id] and result.retried == []
    assert result.stored_errors[bad.id] == "email:deliver payload: field 'to': missing: skip retry for the task"


def test_without_pydantic_dataclasses_still_work(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pydantic", None)  # what `import pydantic` sees when it is not installed
    assert TaskType("e", EmailPayload).decode(b'{"to":"a","user_id":1}') == EmailPayload("a", 1)
    with pytest.raises(TypeError, match=r"dataclass or a pydantic model class \(pydantic is not installed\)"):
        TaskType("e", dict)
