"""Prometheus metrics for fastq workers and Asynq queues (extra ``prometheus``).

Two sources, as the landscape suggests (queue gauges come from Redis, not from processes):

* ``PrometheusHooks`` — a ``WorkerConfig(hooks=[...])`` observer that counts what a worker
  process does: ``fastq_tasks_processed_total`` / ``fastq_tasks_failed_total`` /
  ``fastq_task_outcomes_total`` (by ``queue`` and ``task_type``), the histogram
  ``fastq_task_duration_seconds``, the gauge ``fastq_tasks_in_progress`` and
  ``fastq_redis_errors_total{operation}``, and ``fastq_event_loop_blocked_total`` /
  ``fastq_event_loop_blocked_seconds_total`` (by ``task_type``: the task that blocked a worker's
  event loop for over 1 s, "" when none). In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)
  every forked worker writes its own files and a ``MultiProcessCollector`` sums them.
* ``AsynqQueueCollector(inspector)`` — Go Asynq's ``x/metrics.QueueMetricsCollector``: the
  same names, help texts, types and labels (``asynq_queue_size``, ``asynq_tasks_enqueued_total``
  ...), read through the Inspector at scrape time, so Grafana dashboards and asynqmon's graphs
  built for Asynq work unchanged.

``fastq-supervisor --metrics-port 9090`` does the wiring (``MetricsServer``): it sets up the
multiprocess directory before forking, gives each worker a ``PrometheusHooks``, serves
``/metrics`` from one extra forked child (the supervisor stays single-threaded), and removes
the live-gauge files of workers that die.

prometheus_client is imported lazily, so that ``PROMETHEUS_MULTIPROC_DIR`` can be set first
(prometheus_client picks its value class when it is first imported).
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Optional, TypedDict

if TYPE_CHECKING:  # imported for real only inside the functions (see above)
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("fastq.metrics")

__all__ = ["PrometheusHooks", "AsynqQueueCollector", "MetricsServer", "FAILED_OUTCOMES", "make_registry"]

# task_finished outcomes that count as failures (the handler raised, was stopped, or lost its lease).
FAILED_OUTCOMES = frozenset({"retry", "archive", "lost"})
# Outcomes that are not a finished attempt: a task put back at shutdown runs again later.
_NOT_PROCESSED = frozenset({"requeue"})
OTHER_TYPE = "other"  # the task_type label once max_task_types distinct types were seen
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)



class _Metrics(TypedDict):
    processed: Counter
    failed: Counter
    outcomes: Counter
    duration: Histogram
    in_progress: Gauge
    redis_errors: Counter
    loop_blocked: Counter
    loop_blocked_seconds: Counter


class _Series(NamedTuple):
    """The labelled children of one (queue, task type) and the type label they carry."""

    in_progress: Gauge
    processed: Counter
    failed: Counter
    duration: Histogram
    outcomes: dict[str, Counter]  # outcome -> child of task_outcomes, filled as outcomes occur
    label: str


_metrics_lock = threading.Lock()
# registry -> namespace -> the metric objects (a name registers once). Weak keys: a registry that
# is gone takes its entry along (an id() key could be reused by a new registry and hand it metrics
# registered on the old one).
_metrics_cache: weakref.WeakKeyDictionary[Any, dict[str, _Metrics]] = weakref.WeakKeyDictionary()


def _need_client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("fastq.contrib.prometheus needs prometheus_client: "
                          "pip install 'fastq-tasks[prometheus]'") from exc
    return prometheus_client


def _metrics(registry: Any, namespace: str) -> _Metrics:
    pc = _need_client()
    if registry is None:
        registry = pc.REGISTRY
    with _metrics_lock:
        by_namespace = _metrics_cache.setdefault(registry, {})
        found = by_namespace.get(namespace)
        if found is not None:
            return found
        labels = ("queue", "task_type")
        made: _Metrics = {
            "processed": pc.Counter("tasks_processed", "Task runs finished, with any outcome but a requeue at "
                                    "shutdown", labels, namespace=namespace, registry=registry),
            "failed": pc.Counter("tasks_failed", "Task runs that failed (retry, archive or lost lease)", labels,
                                 namespace=namespace, registry=registry),
            "outcomes": pc.Counter("task_outcomes", "Task runs by outcome: done, complete, retry, archive, "
                                   "requeue, lost", labels + ("outcome",), namespace=namespace, registry=registry),
            "duration": pc.Histogram("task_duration_seconds", "Time from dispatch to the end of a task run",
                                     labels, namespace=namespace, registry=registry, buckets=DURATION_BUCKETS),
            "in_progress": pc.Gauge("tasks_in_progress", "Tasks running now", labels, namespace=namespace,
                                    registry=registry, multiprocess_mode="livesum"),
            "redis_errors": pc.Counter("redis_errors", "Failed Redis calls of workers, by operation",
                                       ("operation",), namespace=namespace, registry=registry),
            "loop_blocked": pc.Counter("event_loop_blocked", "Episodes of a worker's event loop blocked for over "
                                       "1 s, by the type of the task that blocked it ('' when none)",
                                       ("task_type",), namespace=namespace, registry=registry),
            "loop_blocked_seconds": pc.Counter("event_loop_blocked_seconds", "Time worker event loops spent in "
                                               "those episodes", ("task_type",), namespace=namespace,
                                               registry=registry),
        }
        by_namespace[namespace] = made
        return made


class PrometheusHooks:
    """Worker hooks that record task metrics (``WorkerConfig(hooks=[PrometheusHooks()])``).

    ``registry``: where the metrics register (default ``prometheus_client.REGISTRY``; the same
    registry and namespace give the same metric objects, so making several hooks is fine).
    ``max_task_types``: distinct ``task_type`` label values per process before further
    types are counted as ``"other"`` (a producer writing random types cannot blow up the
    series count).
    """

    def __init__(self, registry: Any = None, namespace: str = "fastq", max_task_types: int = 500) -> None:
        if max_task_types < 1:
            raise ValueError("max_task_types must be at least 1")
        m = _metrics(registry, namespace)
        self._processed = m["processed"]
        self._failed = m["failed"]
        self._outcomes = m["outcomes"]
        self._duration = m["duration"]
        self._in_progress = m["in_progress"]
        self._redis_errors = m["redis_errors"]
        self._loop_blocked = m["loop_blocked"]
        self._loop_blocked_seconds = m["loop_blocked_seconds"]
        self._types: set[str] = set()
        self._max_types = max_task_types
        self._series_cache: dict[tuple[str, str], _Series] = {}

    def _series(self, queue: str, task_type: str) -> _Series:
        """The labelled children of one (queue, type), looked up once (``labels()`` is slow)."""
        key = (queue, task_type)
        series = self._series_cache.get(key)
        if series is None:
            if task_type not in self._types and task_type != OTHER_TYPE:
                if len(self._types) >= self._max_types:  # not cached: junk types must not grow the cache
                    return self._series(queue, OTHER_TYPE)
                self._types.add(task_type)
            series = _Series(self._in_progress.labels(queue, task_type), self._processed.labels(queue, task_type),
                             self._failed.labels(queue, task_type), self._duration.labels(queue, task_type), {},
                             task_type)
            self._series_cache[key] = series
        return series

    def task_started(self, ctx: Any) -> None:
        self._series(ctx.queue, ctx.type).in_progress.inc()

    def task_finished(self, ctx: Any, outcome: str, exception: Optional[BaseException], seconds: float) -> None:
        in_progress, processed, failed, duration, outcomes, label = self._series(ctx.queue, ctx.type)
        in_progress.dec()
        counter = outcomes.get(outcome)
        if counter is None:
            counter = outcomes[outcome] = self._outcomes.labels(ctx.queue, label, outcome)
        counter.inc()
        if outcome in _NOT_PROCESSED:
            return
        # processed last: a scrape that counts a run as processed also sees its duration and failure
        duration.observe(seconds if seconds > 0 else 0.0)
        if outcome in FAILED_OUTCOMES:
            failed.inc()
        processed.inc()

    def redis_error(self, operation: str, exception: BaseException) -> None:
        self._redis_errors.labels(operation).inc()

    def loop_blocked(self, ctx: Any, seconds: float) -> None:
        """The event loop did not run for ``seconds`` (> 1 s), blocked by task ``ctx`` (or None)."""
        label = "" if ctx is None else self._series(ctx.queue, ctx.type).label
        self._loop_blocked.labels(label).inc()
        self._loop_blocked_seconds.labels(label).inc(max(0.0, seconds))


class AsynqQueueCollector:
    """Go Asynq's ``QueueMetricsCollector``: queue gauges read through an Inspector per scrape.

    ``registry.register(AsynqQueueCollector(fastq.Inspector(url)))``. Like Go, one
    ``get_queue_info`` per queue per scrape; when Redis cannot be read the Asynq families are
    left out and ``fastq_inspector_up`` is 0 (Go logs and exports nothing).
    """

    def __init__(self, inspector: Any) -> None:
        self.inspector = inspector

    def describe(self) -> list[Metric]:
        return []  # no Redis round trip at registration

    def collect(self) -> Iterator[Metric]:
        _need_client()
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("fastq_inspector_up", "1 when the last scrape could read the queues from Redis")
        try:
            infos = self.inspector.get_queue_infos()
        except Exception as exc:  # Redis down, corrupt data: the scrape itself must still answer
            log.warning("cannot collect queue metrics: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        enqueued = GaugeMetricFamily("asynq_tasks_enqueued_total",
                                     "Number of tasks enqueued; broken down by queue and state.",
                                     labels=["queue", "state"])
        size = GaugeMetricFamily("asynq_queue_size", "Number of tasks in a queue", labels=["queue"])
        latency = GaugeMetricFamily("asynq_queue_latency_seconds",
                                    "Number of seconds the oldest pending task is waiting in pending state to "
                                    "be processed.", labels=["queue"])
        memory = GaugeMetricFamily("asynq_queue_memory_usage_approx_bytes",
                                   "Number of memory used by a given queue (approximated number by sampling).",
                                   labels=["queue"])
        processed = CounterMetricFamily("asynq_tasks_processed",
                                        "Number of tasks processed (both succeeded and failed); broken down by "
                                        "queue", labels=["queue"])
        failed = CounterMetricFamily("asynq_tasks_failed", "Number of tasks failed; broken down by queue",
                                     labels=["queue"])
        paused = GaugeMetricFamily("asynq_queue_paused_total", "Number of queues paused", labels=["queue"])
        for info in infos:
            q = info.queue
            for state in ("active", "pending", "scheduled", "retry", "archived", "completed"):
                enqueued.add_metric([q, state], getattr(info, state))
            size.add_metric([q], info.size)
            latency.add_metric([q], info.latency)
            memory.add_metric([q], info.memory_usage)
            processed.add_metric([q], info.processed_total)
            failed.add_metric([q], info.failed_total)
            paused.add_metric([q], 1 if info.paused else 0)
        up.add_metric([], 1)
        yield from (enqueued, size, latency, memory, processed, failed, paused, up)


def make_registry(redis_url: Optional[str], multiprocess_dir: Optional[str] = None) -> CollectorRegistry:
    """A registry with the workers' metrics (summed over processes when ``multiprocess_dir``
    is given) and, when ``redis_url`` is given, Asynq's queue gauges."""
    pc = _need_client()
    from prometheus_client import multiprocess

    registry: CollectorRegistry = pc.CollectorRegistry()
    if multiprocess_dir is not None:
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]  # unannotated upstream
    if redis_url is not None:
        from fastq.inspect import Inspector
        from fastq.redis.facade import sync_client

        client = sync_client(redis_url, socket_timeout=10.0, socket_connect_timeout=5.0)  # a scrape must end
        registry.register(AsynqQueueCollector(Inspector(client)))
    return registry


class MetricsServer:
    """What ``fastq-supervisor --metrics-port`` runs: call in the supervisor process, before the
    app is imported and before any fork.

    The constructor binds the listening socket (so a busy port fails at start, not in a
    child), points ``PROMETHEUS_MULTIPROC_DIR`` at a directory (a fresh temporary one, or
    the one already set, whose ``*.db`` files are removed) and starts no thread.
    ``serve()`` runs in the supervisor's metrics child; ``worker_hooks()`` in each worker.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9090) -> None:
        self._own_dir = False
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
        if given:
            os.makedirs(given, exist_ok=True)
            for name in os.listdir(given):
                if name.endswith(".db"):
                    os.remove(os.path.join(given, name))
            self.directory = given
        else:
            self.directory = tempfile.mkdtemp(prefix="fastq-metrics-")
            self._own_dir = True
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.directory
        try:
            _need_client()
            self.sock: Optional[socket.socket] = _listen(host, port)
        except BaseException:
            self._remove_dir()
            raise
        self.host, self.port = self.sock.getsockname()[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def worker_hooks(self) -> PrometheusHooks:
        """In a worker child: close the inherited listening socket, return the hooks to add."""
        self.close_socket()
        return PrometheusHooks()

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def process_dead(self, pid: int) -> None:
        """In the supervisor, after reaping ``pid``: drop its live gauges (tasks in progress)."""
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]  # unannotated upstream
        except OSError as exc:  # pragma: no cover - a vanished directory must not stop the supervisor
            log.warning("cannot clean the metrics files of %d: %s", pid, exc)

    def serve(self, redis_url: Optional[str], parent_pid: Optional[int] = None) -> int:
        """Serve ``/metrics`` until SIGTERM/SIGINT/SIGQUIT or the parent's death; returns 0."""
        import signal
        from http.server import ThreadingHTTPServer
        from urllib.parse import urlsplit

        from prometheus_client.exposition import MetricsHandler

        registry = make_registry(redis_url, self.directory)

        class Handler(MetricsHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if urlsplit(self.path).path not in ("/metrics", "/metrics/"):
                    self.send_error(404, "not found: metrics are at /metrics")
                    return
                super().do_GET()

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("metrics %s - %s", self.address_string(), fmt % args)

        Handler.registry = registry

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def service_actions(self) -> None:  # between polls of serve_forever (0.5 s)
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("supervisor %d is gone; metrics server %d stops", parent_pid, os.getpid())
                    raise _Stop()

        def stop(signum: int, frame: Any) -> None:
            raise _Stop()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, stop)
        server: Optional[Server] = None
        try:  # a stop signal may come at any point from here on, also before serving starts
            sock = self.sock  # inherited from the supervisor, already listening
            if sock is None:
                raise RuntimeError("MetricsServer.serve() after close_socket(): no listening socket left")
            server = Server((self.host, self.port), Handler, bind_and_activate=False)
            server.socket.close()
            server.socket = sock
            server.server_address = sock.getsockname()
            log.info("metrics server %d: serving %s (worker files in %s)", os.getpid(), self.url, self.directory)
            server.serve_forever()
        except _Stop:
            pass
        finally:
            if server is not None:
                server.server_close()
        return 0

    def close(self) -> None:
        """In the supervisor at exit: close the socket, remove a directory it created."""
        self.close_socket()
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._own_dir = False


class _Stop(Exception):
    pass


def _listen(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock
