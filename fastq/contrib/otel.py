"""OpenTelemetry tracing for fastq (extra ``otel``; needs only ``opentelemetry-api``).

The trace context travels in the task's Asynq ``headers`` (TaskMessage field 15) with the
globally configured propagator (W3C ``traceparent``/``tracestate`` and ``baggage`` by
default); Go Asynq servers carry those headers along untouched.

Producer side — wrap a client::

    client = fastq.contrib.otel.TracedClient(fastq.Client(url))        # or TracedAsyncClient
    client.enqueue(fastq.Task("email:send", b"..."), queue="low")       # span "send low" (PRODUCER)

or put the current context into a task yourself: ``task = inject_context(task)``.

Consumer side — a ServeMux middleware::

    mux.use(fastq.contrib.otel.tracing_middleware())

Each run gets a CONSUMER span ``process <task type>`` whose parent is the producer's span,
with the messaging attributes (``messaging.system=fastq``, ``messaging.destination.name``,
``messaging.message.id``, ...) and ``fastq.task.id``, ``fastq.task.type``, ``fastq.queue``,
``fastq.task.retry``, ``fastq.task.max_retry``. A handler that raises marks the span as an
error (the exception is recorded); ``fastq.RevokeTask`` does not, as the task counts as
processed. Tasks a handler enqueues through a traced client join the same trace.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastq.contrib.otel needs opentelemetry-api: pip install 'fastq-tasks[otel]'") from exc

from fastq.context import current_task
from fastq.errors import RevokeTask
from fastq.mux import Handler, is_async_handler
from fastq.task import Task

__all__ = ["inject_context", "extract_context", "tracing_middleware", "TracedClient", "TracedAsyncClient",
           "MESSAGING_SYSTEM"]

MESSAGING_SYSTEM = "fastq"
_SCOPE = "fastq"


def _tracer(tracer_provider: Any) -> Any:
    from fastq import __version__

    return trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)


def inject_context(task: Task, context: Any = None) -> Task:
    """A copy of ``task`` whose headers carry ``context`` (default: the current one).

    Header keys the task already has are kept (yours win). With no active span (or no SDK
    configured) nothing is added and ``task`` is returned as it is."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    added = {k: v for k, v in carrier.items() if k not in task.headers}
    if not added:
        return task
    return Task(task.type, task.payload, {**task.headers, **added})


def extract_context(headers: Optional[Mapping[str, str]]) -> Any:
    """The OpenTelemetry context carried by a task's headers (empty when there is none)."""
    return propagate.extract(dict(headers or {}))


def _process_attributes(task: Task) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.body.size": len(task.payload),
        "fastq.task.type": task.type,
    }
    ctx = current_task()
    if ctx is not None:
        attrs.update({
            "messaging.destination.name": ctx.queue,
            "messaging.message.id": ctx.task_id,
            "fastq.task.id": ctx.task_id,
            "fastq.queue": ctx.queue,
            "fastq.task.retry": ctx.retry_count,
            "fastq.task.max_retry": ctx.max_retry,
        })
    return attrs


class _ProcessSpan:
    """Start the consumer span in the task's remote context; end it with the handler's outcome."""

    __slots__ = ("tracer", "task", "span", "token")

    def __init__(self, tracer: Any, task: Task) -> None:
        self.tracer = tracer
        self.task = task

    def __enter__(self) -> Any:
        parent = extract_context(self.task.headers)
        self.span = self.tracer.start_span(f"process {self.task.type}", context=parent, kind=SpanKind.CONSUMER,
                                           attributes=_process_attributes(self.task))
        self.token = otel_context.attach(trace.set_span_in_context(self.span, parent))
        return self.span

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        try:
            if exc is not None and not isinstance(exc, RevokeTask):
                if isinstance(exc, Exception):
                    self.span.record_exception(exc)
                    self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                else:  # CancelledError: deadline, cancel request or shutdown
                    self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: task stopped"))
            elif exc is None:
                self.span.set_status(Status(StatusCode.OK))
        finally:
            otel_context.detach(self.token)
            self.span.end()


def tracing_middleware(tracer_provider: Any = None) -> Any:
    """A ServeMux middleware (``mux.use(tracing_middleware())``) that runs each handler in a
    CONSUMER span continuing the trace found in the task's headers. Async handlers stay
    async and sync ones sync (they run in the worker's thread pool as before)."""
    tracer = _tracer(tracer_provider)

    def middleware(handler: Handler) -> Handler:
        if is_async_handler(handler):
            async def traced_async(task: Task) -> Any:
                with _ProcessSpan(tracer, task):
                    return await handler(task)
            return traced_async

        def traced(task: Task) -> Any:
            with _ProcessSpan(tracer, task):
                return handler(task)
        return traced

    return middleware


def _send_span(tracer: Any, queue: str, count: Optional[int] = None) -> Any:
    attrs: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": queue,
    }
    if count is not None:
        attrs["messaging.batch.message_count"] = count
    return tracer.start_as_current_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes=attrs)


def _queue(options: Mapping[str, Any]) -> str:
    q = options.get("queue")
    return q if isinstance(q, str) and q else "default"


class TracedClient:
    """A ``fastq.Client`` whose enqueues run in a PRODUCER span and carry its context in the
    task headers. Everything else is the wrapped client's (``.redis``, ``close()``, ...)."""

    def __init__(self, client: Any, tracer_provider: Any = None) -> None:
        self.client = client
        self._tracer = _tracer(tracer_provider)

    def enqueue(self, task: Task, **options: Any) -> Any:
        with _send_span(self._tracer, _queue(options)) as span:
            info = self.client.enqueue(inject_context(task), **options)
            span.set_attribute("messaging.message.id", info.id)
            span.set_attribute("fastq.task.type", task.type)
            return info

    def enqueue_many(self, tasks: Iterable[Task], **options: Any) -> Any:
        tasks = list(tasks)
        with _send_span(self._tracer, _queue(options), len(tasks)):
            return self.client.enqueue_many([inject_context(t) for t in tasks], **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def __enter__(self) -> "TracedClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()


class TracedAsyncClient:
    """``TracedClient`` for a ``fastq.AsyncClient`` (methods awaited)."""

    def __init__(self, client: Any, tracer_provider: Any = None) -> None:
        self.client = client
        self._tracer = _tracer(tracer_provider)

    async def enqueue(self, task: Task, **options: Any) -> Any:
        with _send_span(self._tracer, _queue(options)) as span:
            info = await self.client.enqueue(inject_context(task), **options)
            span.set_attribute("messaging.message.id", info.id)
            span.set_attribute("fastq.task.type", task.type)
            return info

    async def enqueue_many(self, tasks: Iterable[Task], **options: Any) -> Any:
        tasks = list(tasks)
        with _send_span(self._tracer, _queue(options), len(tasks)):
            return await self.client.enqueue_many([inject_context(t) for t in tasks], **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def __aenter__(self) -> "TracedAsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
