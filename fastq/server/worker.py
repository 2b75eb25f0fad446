"""A worker: one event loop running the processor and its helpers.

``fastq-supervisor`` forks processes that each call ``run_worker``; tests and
embedders can run a ``Worker`` in-process with ``await worker.run()`` and stop
it with ``worker.stop()``.

Signals (installed by ``run_worker``): the first SIGTERM is a graceful stop
(no new tasks; running ones get ``shutdown_timeout`` seconds, then are
requeued), a second SIGTERM or a SIGQUIT stops at once (running tasks are
requeued right away). SIGINT is ignored in a child: the supervisor owns Ctrl-C.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import uuid
from typing import Any, Optional

from redis.exceptions import RedisError

from fastq._rdb.worker import Broker
from fastq.redis.clients import fail_fast_options
from fastq.redis.facade import async_client
from fastq.redis.url import redact
from fastq.server.aggregator import aggregation_loop
from fastq.server.config import WorkerConfig
from fastq.server.forwarder import forward_loop
from fastq.server.heartbeat import Heartbeater
from fastq.server.janitor import janitor_loop
from fastq.server.leases import LeaseKeeper
from fastq.server.loops import EXIT_FATAL_REDIS, EXIT_LOOP_FAILED, supervise
from fastq.server.processor import Processor
from fastq.server.recoverer import recover_loop
from fastq.server.subscriber import pubsub_listener

log = logging.getLogger("fastq.worker")


def redis_options() -> dict[str, Any]:
    """Worker connections fail fast and let fastq's own loops retry with back-off."""
    return {**fail_fast_options(asyncio=True), "health_check_interval": 15}


class Worker:
    """One fastq worker (one Asynq server) in the current process, on the running event loop.

    ``handler`` is a ``ServeMux``, a handler callable or a ``fastq.App`` (its mux; ``config``
    then defaults to ``app.worker_config()``); ``config`` a ``WorkerConfig`` (defaults
    to ``WorkerConfig()``, which reads ``$FASTQ_REDIS_URL``); ``redis`` an optional
    ``redis.asyncio.Redis`` to use instead of ``config.redis_url``. ``await worker.run()``
    serves until ``worker.stop()``. ``fastq-supervisor`` runs one in each worker process; run
    one yourself where the supervisor does not fit (tests, Windows, your own process manager).
    """

    def __init__(self, handler: Any, config: Optional[WorkerConfig] = None, redis: Any = None) -> None:
        handler, config = handler.worker_parts(config) if hasattr(handler, "worker_parts") else (handler, config)
        self.config = config or WorkerConfig()
        self._redis_arg = redis
        self.handler = handler
        self.processor: Optional[Processor] = None
        self.heartbeater: Optional[Heartbeater] = None
        self.lease_keeper: Optional[LeaseKeeper] = None  # extends leases from a thread
        self.keyspace: Any = None  # the KeyspaceWakeup of config.keyspace_wakeup, once running
        self._stop: Optional[asyncio.Event] = None
        self._immediate = False
        self._stop_requests = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._drain_task: Optional[asyncio.Task[None]] = None
        self.started: Optional[asyncio.Event] = None  # set once run() has started its loops
        self.recycled = False  # stopped itself after max_tasks
        self.exit_code = 0  # EXIT_LOOP_FAILED when a background loop kept failing

    # ----------------------------------------------------------- life cycle

    def stop(self, immediate: bool = False) -> None:
        """Ask the worker to stop; thread-safe. A second call is always immediate."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._request_stop, immediate)

    def _request_stop(self, immediate: bool) -> None:
        self._stop_requests += 1
        if immediate or self._stop_requests > 1:
            self._immediate = True
            if self.processor is not None:
                self.processor.stop_fetching()
        if self._stop is not None:
            self._stop.set()
        if self._immediate and self._drain_task is not None:
            self._drain_task.cancel()

    async def run(self) -> None:
        """Take and run tasks until ``stop()``; then finish or requeue the running ones and deregister.

        A graceful stop gives running tasks ``shutdown_timeout`` seconds, then puts the rest
        back to ``pending``; an immediate stop requeues them at once.
        """
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        # durability=None: WAIT is for enqueues; a worker's lost ack means a re-run, never a lost task
        redis = self._redis_arg or async_client(cfg.redis_url, durability=None, **redis_options())
        broker = Broker(redis)
        server_id = cfg.server_id or str(uuid.uuid4())
        self.processor = processor = Processor(broker, self.handler, cfg, server_id)
        processor.bind()
        if cfg.max_tasks:
            processor.on_processed = self._recycle_after
        processor.on_stuck = self._recycle_stuck
        from fastq.results import ResultStore

        processor.results = ResultStore(broker, self._loop)
        self.heartbeater = heartbeater = Heartbeater(broker, processor, cfg, server_id)
        if await self._refused(redis):
            return
        if cfg.on_start is not None:
            result = cfg.on_start()
            if asyncio.iscoroutine(result):
                await result
        self._upkeep_stop = asyncio.Event()  # forwarder and recoverer stop first
        self._heartbeat_stop = asyncio.Event()  # the heartbeat runs until the tasks are settled
        # Start-up writes are best-effort: a full Redis (maxmemory, noeviction) refuses SADD, yet
        # draining tasks is exactly what frees memory, so the worker must start regardless.
        publish = asyncio.create_task(self._publish_queues(broker), name="fastq-publish-queues")
        await _warn_about_server(redis)
        await _load_scripts(broker)
        try:  # register and warm a connection before taking tasks
            await heartbeater.beat()
        except (RedisError, OSError) as exc:
            log.warning("first heartbeat failed: %s", exc)
        log.info("worker %d started: queues %s, concurrency %d, redis %s", os.getpid(),
                 ",".join(f"{q}={w}" for q, w in cfg.queues.items()), cfg.concurrency, redact(cfg.redis_url))
        upkeep = [
            self._supervised("forwarder", lambda: forward_loop(broker, cfg, self._upkeep_stop, processor.health)),
            self._supervised("recoverer", lambda: recover_loop(broker, processor, cfg, self._upkeep_stop)),
            self._supervised("janitor", lambda: janitor_loop(broker, cfg, self._upkeep_stop, processor.health)),
            self._supervised("aggregator",
                             lambda: aggregation_loop(broker, cfg, self._upkeep_stop, processor.health)),
            publish,
        ]
        limits = processor.limits
        if limits is not None:  # rate-limited tasks wait with sub-second scores
            upkeep.append(self._supervised("limits", lambda: limits.forward_loop(cfg.queues, self._upkeep_stop)))
        if cfg.keyspace_wakeup:
            from fastq.server.keyspace import KeyspaceWakeup

            self.keyspace = KeyspaceWakeup(redis, processor, cfg.queues, cfg.poll_interval)
            wakeup = self.keyspace
            heartbeater.on_restart = wakeup.redis_changed
            upkeep.append(self._supervised("keyspace", lambda: wakeup.listen(self._upkeep_stop)))
        self._cancel_stop = asyncio.Event()
        listener = self._supervised("pubsub",
                                    lambda: pubsub_listener(redis, processor, cfg.queues, self._cancel_stop))
        core = [
            self._supervised("fetch", processor.fetch_loop),
            self._supervised("deadline", processor.deadline_loop),
            self._supervised("ack", processor.ack_loop),
            self._supervised("heartbeat", lambda: heartbeater.run(self._heartbeat_stop)),
        ]
        self.lease_keeper = LeaseKeeper(processor, cfg).start()  # leases must not wait for this event loop
        self.started.set()
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(upkeep, core, listener, redis)

    async def _refused(self, redis: Any) -> bool:
        """PING once at start. A fatal refusal (credentials, ACL, TLS, unknown host) ends the worker
        with one line and ``EXIT_FATAL_REDIS``: retrying cannot help. Anything else (Redis down,
        loading, full) is left to the loops, which retry with back-off."""
        from fastq.redis.startup import fatal_reason

        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            reason = fatal_reason(exc)
            if reason is None:
                return False
            log.error("worker %d: Redis at %s %s", os.getpid(), redact(self.config.redis_url), reason)
            self.exit_code = EXIT_FATAL_REDIS
            if self._redis_arg is None:
                await redis.aclose()
            return True
        return False

    def _supervised(self, name: str, factory: Any) -> asyncio.Task[None]:
        """A background loop run under ``fastq.server.loops.supervise`` (restarted on unexpected errors)."""
        return asyncio.create_task(supervise(name, factory, self._loop_failed), name=f"fastq-{name}")

    def _loop_failed(self, name: str, exc: BaseException) -> None:
        """A loop kept failing: stop (its tasks are finished or requeued) and exit non-zero, so that the
        supervisor replaces this process instead of leaving a worker that heartbeats but does not work."""
        log.critical("worker %d stops so that it is replaced: its %s loop keeps failing", os.getpid(), name)
        self.exit_code = EXIT_LOOP_FAILED
        if self.heartbeater is not None:
            self.heartbeater.status = "closed"
        if self.processor is not None:
            self.processor.stop_fetching()
        self._request_stop(False)

    def _recycle_after(self, processed: int) -> None:
        if processed >= self.config.max_tasks and self._stop_requests == 0:
            log.info("worker %d processed %d task(s) (max_tasks %d): recycling", os.getpid(), processed,
                     self.config.max_tasks)
            if self.processor is not None:
                self.processor.stop_fetching()
            self._request_stop(False)
            self.recycled = True

    def _recycle_stuck(self, why: str) -> None:
        if self._stop_requests == 0:
            log.error("%s: recycling worker %d so the thread ends with the process", why, os.getpid())
            if self.processor is not None:
                self.processor.stop_fetching()
            self._request_stop(False)
            self.recycled = True

    async def _shutdown(self, upkeep: list[asyncio.Task[Any]], core: list[asyncio.Task[None]],
                        listener: asyncio.Task[None], redis: Any) -> None:
        processor, cfg = self.processor, self.config
        heartbeater = self.heartbeater
        assert processor is not None and heartbeater is not None, "run() sets them first"
        heartbeater.status = "closed"
        processor.stop_fetching()
        self._upkeep_stop.set()
        # A dequeue in flight may still hand us claims: let it land so they are started and
        # then finished or requeued below, rather than orphaned until their lease expires.
        await asyncio.wait([core[0]], timeout=6.0)
        timeout = 0.0 if self._immediate else cfg.shutdown_timeout
        log.info("worker %d stopping (%s), %d task(s) running", os.getpid(),
                 "immediately" if self._immediate else f"waiting up to {timeout:g}s", len(processor.running))
        self._drain_task = asyncio.create_task(processor.drain(timeout))
        try:
            await self._drain_task
        except asyncio.CancelledError:  # a second stop request during the wait
            await processor.drain(0)
        await processor.close()
        if self.lease_keeper is not None:  # the last outcomes are written: the leases can go
            await self.lease_keeper.stop()
        self._heartbeat_stop.set()
        self._cancel_stop.set()
        await _join(upkeep + core + [listener], timeout=5.0)
        try:
            await heartbeater.clear()
        except (RedisError, OSError) as exc:
            log.warning("could not deregister the server: %s", exc)
        if self._redis_arg is None:
            await redis.aclose()
        log.info("worker %d stopped after %d task(s)", os.getpid(), processor.processed)

    async def _publish_queues(self, broker: Broker) -> None:
        """Add the served queues to ``asynq:queues``, in the background until it succeeds.

        Workers do not need their queues there, but the Inspector, CLI and asynqmon only show
        listed queues; a Go server does not add them, fastq does. Failures (Redis down or full)
        are reported to the processor's RedisHealth (one line per outage) and retried."""
        delay = 0.1
        assert self.processor is not None, "run() sets it first"
        health = self.processor.health
        while not self._upkeep_stop.is_set():
            try:
                await broker.register_queues(self.config.queues)
                health.ok("register queues")
                return
            except (RedisError, OSError) as exc:
                health.failed("register queues", exc)
            try:
                await asyncio.wait_for(self._upkeep_stop.wait(), delay * (0.5 + random.random()))
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 5.0)


async def _join(tasks: list[asyncio.Task[Any]], timeout: float) -> None:
    """Wait for loops that were told to stop; cancel any that do not finish in time."""
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        log.warning("%s did not stop in %.0fs; cancelling it", task.get_name(), timeout)
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %r", task.get_name(), task.exception())


async def _load_scripts(broker: Broker) -> None:
    """SCRIPT LOAD every script once at start, so the first calls need no NOSCRIPT round trip."""
    try:
        await broker.load_scripts()
    except (RedisError, OSError) as exc:  # the calls themselves load scripts on NOSCRIPT anyway
        log.debug("preloading scripts failed: %s", exc)


async def _warn_about_server(redis: Any) -> None:
    """One WARNING at start for Redis settings that lose tasks (never fatal; CONFIG may be denied)."""
    try:
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
    except (RedisError, OSError):
        return
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy and policy != "noeviction":
        log.warning("Redis maxmemory-policy is %r: under memory pressure Redis may evict task data. "
                    "Use 'noeviction' for a task queue (as Asynq, Sidekiq and BullMQ advise).", policy)


def install_signal_handlers(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker._request_stop, False)
    loop.add_signal_handler(signal.SIGQUIT, worker._request_stop, True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (and FASTQ_NO_UVLOOP is unset), else asyncio's."""
    if not os.environ.get("FASTQ_NO_UVLOOP"):
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a default dependency on POSIX
            pass
    return asyncio.new_event_loop()


def run_worker(handler: Any, config: WorkerConfig, parent_pid: Optional[int] = None) -> int:
    """Run a worker until it is told to stop (blocking; installs signal handlers). Returns the
    process exit code: 0, or ``EXIT_LOOP_FAILED`` when a background loop kept failing."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(handler, config)

    async def main() -> None:
        install_signal_handlers(worker)
        if parent_pid is not None:
            asyncio.create_task(_watch_parent(worker, parent_pid))
        await worker.run()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return worker.exit_code


async def _watch_parent(worker: Worker, parent_pid: int) -> None:
    """Stop gracefully if the supervisor dies (we would be re-parented)."""
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent_pid:
            log.warning("supervisor %d is gone; stopping", parent_pid)
            worker.stop()
            return
