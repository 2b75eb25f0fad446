"""OpenTelemetry: trace context carried in task headers from a traced client to a real worker, whose
ServeMux middleware continues it in a CONSUMER span (SDK in-memory exporter, real Redis)."""
from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install -e '.[otel]'")
from helpers import RunningWorker, async_wait_for  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import fastq  # noqa: E402
from fastq.contrib.otel import (  # noqa: E402
    TracedAsyncClient,
    TracedClient,
    extract_context,
    inject_context,
    tracing_middleware,
)


@pytest.fixture
def tracing():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def spans_named(exporter, name):
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_trace_goes_from_enqueue_to_the_handler_and_on_to_child_tasks(redis_url, tracing):
    provider, exporter = tracing
    tracer = provider.get_tracer("test")
    client = TracedClient(fastq.Client(redis_url), tracer_provider=provider)
    mux = fastq.ServeMux()
    mux.use(tracing_middleware(provider))
    seen = {}

    @mux.handle("email:send")
    async def send(task):
        span = trace.get_current_span()
        seen["send"] = (span.get_span_context().trace_id, span.get_span_context().span_id)
        client.enqueue(fastq.Task("email:log", b"x"), queue="low")  # joins the same trace

    @mux.handle("email:log")
    def log(task):  # a sync handler: its span is current in the thread it runs in
        seen["log"] = (trace.get_current_span().get_span_context().span_id, threading.current_thread().name)

    with tracer.start_as_current_span("http request") as root:
        info = client.enqueue(fastq.Task("email:send", b'{"to": 1}'), queue="default", max_retry=2)
    stored = fastq.Inspector(redis_url).get_task_info("default", info.id)
    assert stored.headers["traceparent"].startswith("00-")  # W3C trace context, Asynq header map

    async def main():
        async with RunningWorker(mux, redis_url, queues={"default": 1, "low": 1}):
            await async_wait_for(lambda: "log" in seen and spans_named(exporter, "process email:log"),
                                 what="both tasks ran")

    asyncio.run(main())
    trace_id = root.get_span_context().trace_id
    (send_span,) = [s for s in spans_named(exporter, "send default")]
    (process,) = spans_named(exporter, "process email:send")
    (send_low,) = spans_named(exporter, "send low")
    (process_log,) = spans_named(exporter, "process email:log")
    for span in (send_span, process, send_low, process_log):
        assert span.context.trace_id == trace_id
    assert send_span.kind == SpanKind.PRODUCER and send_span.parent.span_id == root.get_span_context().span_id
    assert process.kind == SpanKind.CONSUMER and process.parent.span_id == send_span.context.span_id
    assert process.parent.is_remote
    assert send_low.parent.span_id == process.context.span_id
    assert process_log.parent.span_id == send_low.context.span_id
    assert seen["send"] == (trace_id, process.context.span_id)
    assert seen["log"][0] == process_log.context.span_id and seen["log"][1].startswith("fastq-sync")
    assert dict(send_span.attributes) == {
        "messaging.system": "fastq", "messaging.operation.type": "send", "messaging.operation.name": "enqueue",
        "messaging.destination.name": "default", "messaging.message.id": info.id, "fastq.task.type": "email:send"}
    attrs = dict(process.attributes)
    assert attrs["fastq.task.id"] == attrs["messaging.message.id"] == info.id
    assert attrs["fastq.task.type"] == "email:send" and attrs["fastq.queue"] == "default"
    assert attrs["messaging.destination.name"] == "default" and attrs["messaging.system"] == "fastq"
    assert attrs["fastq.task.retry"] == 0 and attrs["fastq.task.max_retry"] == 2
    assert attrs["messaging.message.body.size"] == 9
    assert process.status.status_code == StatusCode.OK
    assert dict(process_log.attributes)["fastq.queue"] == "low"


def test_failures_mark_the_span_and_retries_carry_the_retry_count(redis_url, tracing):
    provider, exporter = tracing
    mux = fastq.ServeMux()
    mux.use(tracing_middleware(provider))
    runs = []

    @mux.handle("flaky")
    async def flaky(task):
        runs.append(fastq.get_retry_count())
        if len(runs) == 1:
            raise RuntimeError("database down")

    @mux.handle("revoked")
    def revoked(task):
        raise fastq.RevokeTask()

    with provider.get_tracer("t").start_as_current_span("root"):
        c = TracedClient(fastq.Client(redis_url), tracer_provider=provider)
        c.enqueue(fastq.Task("flaky"), max_retry=3)
        c.enqueue(fastq.Task("revoked"))

    async def main():
        async with RunningWorker(mux, redis_url, retry_delay=lambda *a: 0):
            await async_wait_for(lambda: len(spans_named(exporter, "process flaky")) == 2
                                 and spans_named(exporter, "process revoked"), what="two runs of flaky")

    asyncio.run(main())
    first, second = sorted(spans_named(exporter, "process flaky"), key=lambda s: s.start_time)
    assert first.status.status_code == StatusCode.ERROR and "RuntimeError: database down" in first.status.description
    (event,) = [e for e in first.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"
    assert dict(first.attributes)["fastq.task.retry"] == 0 and dict(second.attributes)["fastq.task.retry"] == 1
    assert second.status.status_code == StatusCode.OK
    assert first.parent.span_id == second.parent.span_id  # both continue the same producer span
    (rev,) = spans_named(exporter, "process revoked")
    assert rev.status.status_code != StatusCode.ERROR


def test_a_task_stopped_at_its_deadline_ends_its_span_as_an_error(redis_url, tracing):
    provider, exporter = tracing
    mux = fastq.ServeMux()
    mux.use(tracing_middleware(provider))

    @mux.handle("slow")
    async def slow(task):
        await asyncio.sleep(30)

    fastq.Client(redis_url).enqueue(fastq.Task("slow"), timeout=1, max_retry=0)

    async def main():
        async with RunningWorker(mux, redis_url):
            await async_wait_for(lambda: spans_named(exporter, "process slow"), timeout=10, what="span ended")

    asyncio.run(main())
    (span,) = spans_named(exporter, "process slow")
    assert span.status.status_code == StatusCode.ERROR and "CancelledError" in span.status.description


def test_async_client_batch_enqueue_shares_one_producer_span(redis_url, tracing):
    provider, exporter = tracing

    async def main():
        client = TracedAsyncClient(fastq.AsyncClient(redis_url), tracer_provider=provider)
        async with client:
            infos = await client.enqueue_many([fastq.Task("n", str(i).encode()) for i in range(5)], queue="bulk")
            one = await client.enqueue(fastq.Task("one"), queue="bulk")
        return infos, one

    infos, one = asyncio.run(main())
    batch, single = sorted(spans_named(exporter, "send bulk"), key=lambda s: s.start_time)
    assert dict(batch.attributes)["messaging.batch.message_count"] == 5
    assert dict(single.attributes)["messaging.message.id"] == one.id
    ins = fastq.Inspector(redis_url)
    parents = {ins.get_task_info("bulk", i.id).headers["traceparent"] for i in infos}
    assert len(parents) == 1
    ctx = trace.get_current_span(extract_context({"traceparent": parents.pop()})).get_span_context()
    assert ctx.span_id == batch.context.span_id and ctx.is_remote


def test_inject_context_without_a_span_adds_nothing_and_keeps_your_headers(tracing):
    provider, _ = tracing
    task = fastq.Task("t", b"", {"traceparent": "mine"})
    assert inject_context(fastq.Task("t")).headers == {}
    with provider.get_tracer("t").start_as_current_span("s"):
        assert inject_context(task).headers == {"traceparent": "mine"}
        added = inject_context(fastq.Task("t", b"p", {"k": "v"}))
    assert added.headers["k"] == "v" and added.headers["traceparent"].startswith("00-") and added.payload == b"p"


def test_middleware_keeps_handlers_sync_or_async():
    mw = tracing_middleware(TracerProvider())

    async def a(task):
        return b"a"

    def s(task):
        return b"s"

    assert inspect.iscoroutinefunction(mw(a)) and not inspect.iscoroutinefunction(mw(s))
    assert mw(s)(fastq.Task("x")) == b"s"  # outside a worker: no task context, still works
    assert asyncio.run(mw(a)(fastq.Task("x"))) == b"a"
