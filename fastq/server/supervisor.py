"""The supervisor: forks worker processes and keeps the right number alive.

The parent holds no Redis connection and no event loop. It blocks the signals
it handles and takes them one at a time with ``sigtimedwait``, so there is no
signal-handler re-entrancy:

* SIGCHLD: reap; a worker that died while we are running is replaced (only
  that one). A worker that dies within ``MIN_UPTIME`` seconds of its start is
  restarted after a back-off that doubles up to ``MAX_BACKOFF``. The tasks a
  dead worker held are recovered at once (``recovery.recover_worker``): the
  supervisor chose the worker's server id, which prefixes its lease tokens.
* Recycling: a worker that exits 0 by itself (``max_tasks`` reached) or is
  told to stop because its RSS passed ``max_memory_mb`` finishes its tasks and
  is replaced at once.
* SIGTERM / SIGINT: graceful stop, forwarded as SIGTERM to every worker; a
  second one sends SIGQUIT (immediate stop). Workers still alive
  ``shutdown_timeout + KILL_GRACE`` seconds later are killed.
* Metrics (``metrics``, a ``fastq.contrib.prometheus.MetricsServer``): ``/metrics`` is
  served by one more child, restarted like a worker; the parent only binds the socket
  (before any fork) and removes the live-gauge files of reaped children, so it stays
  single-threaded.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import time
import uuid
from dataclasses import replace
from typing import Any, Optional

from fastq.logging import lifecycle
from fastq.server.config import WorkerConfig
from fastq.server.loops import EXIT_REASONS

log = logging.getLogger("fastq.supervisor")

MIN_UPTIME = 2.0
MAX_BACKOFF = 30.0
KILL_GRACE = 10.0
MEMORY_MIN_UPTIME = 10.0  # a worker recycled for memory sooner than this means the limit is too low
HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
SCHEDULER_SLOT = -1  # the slot of the optional periodic-task scheduler child
METRICS_SLOT = -2  # the slot of the optional /metrics server child


def _kind(slot: int) -> str:
    return {SCHEDULER_SLOT: "scheduler", METRICS_SLOT: "metrics server"}.get(slot, "worker")


def _set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - optional at runtime
        pass


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:  # pragma: no cover
            name = str(sig)
        return f"killed by {name}"
    code = os.waitstatus_to_exitcode(status)
    why = EXIT_REASONS.get(code)
    return f"exit code {code} ({why})" if why else f"exit code {code}"


class Supervisor:
    def __init__(self, handler: Any, config: WorkerConfig, processes: int, app_name: str = "app",
                 max_memory_mb: float = 0.0, scheduler: Any = None, metrics: Any = None) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.handler = handler
        self.config = config
        self.processes = processes
        self.app_name = app_name
        self.max_memory_mb = max_memory_mb
        self.scheduler = scheduler  # a Scheduler / PeriodicTaskManager run in one extra child
        self.metrics = metrics  # a fastq.contrib.prometheus.MetricsServer served by one extra child
        self.children: dict[int, int] = {}  # pid -> slot
        self.server_ids: dict[int, str] = {}  # pid -> the server id given to that worker
        self.recycling: set[int] = set()  # pids told to stop for using too much memory
        self.started_at: dict[int, float] = {}  # slot -> start time of its current worker
        self.backoff: dict[int, float] = {}  # slot -> current restart delay
        self.restart_due: dict[int, float] = {}  # slot -> when to start it again
        self.recycled_rss: dict[int, float] = {}  # pid -> RSS (MB) when it was told to stop for memory
        self.memory_backoff: dict[int, float] = {}  # slot -> restart delay after early memory recycles
        self.memory_warned = False
        self.stopping = False
        self.signals_seen = 0
        self.kill_at: Optional[float] = None
        self.pid = os.getpid()

    # ------------------------------------------------------------ children

    def _spawn(self, slot: int) -> None:
        for handler in logging.getLogger().handlers:
            handler.flush()
        server_id = str(uuid.uuid4())
        config = replace(self.config, server_id=server_id)
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                for sig in HANDLED:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                if self.metrics is not None and slot != METRICS_SLOT:
                    self.metrics.close_socket()
                if slot == METRICS_SLOT:
                    _set_title(f"fastq-supervisor: metrics [{self.app_name}]")
                    code = self.metrics.serve(config.redis_url, parent_pid=self.pid)
                elif slot == SCHEDULER_SLOT:
                    _set_title(f"fastq-supervisor: scheduler [{self.app_name}]")
                    from fastq.scheduler import run_scheduler

                    code = run_scheduler(self.scheduler, config.redis_url, parent_pid=self.pid, handle_sigint=False)
                else:
                    _set_title(f"fastq-supervisor: worker {slot} [{self.app_name}]")
                    from fastq.server.worker import run_worker

                    if self.metrics is not None:
                        config = replace(config, hooks=[*config.hooks, self.metrics.worker_hooks()])
                    code = run_worker(self.handler, config, parent_pid=self.pid)
            except BaseException:  # noqa: BLE001 - report anything, then leave
                log.exception("%s %d crashed", _kind(slot), os.getpid(),
                              extra=lifecycle("child_crashed", child_pid=os.getpid(), slot=slot))
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot
        self.server_ids[pid] = server_id
        self.started_at[slot] = time.monotonic()
        log.info("started %s %d (slot %d)", _kind(slot), pid, slot,
                 extra=lifecycle("child_started", child_pid=pid, slot=slot, kind=_kind(slot)))

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            server_id = self.server_ids.pop(pid, None)
            recycled = pid in self.recycling
            self.recycling.discard(pid)
            if slot is None:
                continue
            if self.metrics is not None:
                self.metrics.process_dead(pid)
            how = describe_status(status)
            kind = _kind(slot)
            fields = _exit_fields(status, child_pid=pid, slot=slot, kind=kind)
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            if not clean and server_id is not None and slot >= 0:
                self._recover(server_id, pid, how)
            if self.stopping:
                log.info("%s %d (slot %d) stopped: %s", kind, pid, slot, how,
                         extra=lifecycle("child_stopped", **fields))
                continue
            if clean:
                log.info("%s %d (slot %d) recycled (%s); starting a fresh one", kind, pid, slot,
                         "memory limit" if recycled else "it stopped itself: task limit or stuck handler",
                         extra=lifecycle("child_recycled", reason="memory" if recycled else "self", **fields))
                self.restart_due[slot] = time.monotonic() + (self._memory_backoff(slot, pid) if recycled else 0.0)
                continue
            uptime = time.monotonic() - self.started_at.get(slot, 0.0)
            if uptime < MIN_UPTIME:
                delay = min(MAX_BACKOFF, max(0.5, self.backoff.get(slot, 0.25) * 2))
                self.backoff[slot] = delay
                log.error("%s %d (slot %d) died after %.1fs (%s); restarting in %.1fs",
                          kind, pid, slot, uptime, how, delay,
                          extra=lifecycle("child_died", uptime=round(uptime, 3), restart_in=delay, **fields))
            else:
                delay = 0.0
                self.backoff.pop(slot, None)
                log.error("%s %d (slot %d) died (%s); restarting it", kind, pid, slot, how,
                          extra=lifecycle("child_died", uptime=round(uptime, 3), restart_in=0.0, **fields))
            self.restart_due[slot] = time.monotonic() + delay

    def _recover(self, server_id: str, pid: int, how: str) -> None:
        """Settle a dead worker's claims now. Nothing found in Redis may end the supervisor: an
        unexpected error is logged and the claims are left to lease recovery."""
        try:
            from fastq.server.recovery import recover_worker

            recover_worker(self.config, server_id, pid, how)
        except Exception:  # noqa: BLE001
            log.exception("recovering the tasks of dead worker %d failed; lease recovery will take them", pid)

    def _memory_backoff(self, slot: int, pid: int) -> float:
        """Delay before replacing a worker recycled for memory. One that passed the limit within
        ``MEMORY_MIN_UPTIME`` of its start means the limit is below what a fresh worker needs:
        replacing it at once would fork in a loop, so back off (doubling up to ``MAX_BACKOFF``) and
        say why once."""
        rss = self.recycled_rss.pop(pid, 0.0)
        uptime = time.monotonic() - self.started_at.get(slot, 0.0)
        if uptime >= MEMORY_MIN_UPTIME:
            self.memory_backoff.pop(slot, None)
            return 0.0
        delay = min(MAX_BACKOFF, self.memory_backoff.get(slot, 0.5) * 2)
        self.memory_backoff[slot] = delay
        if not self.memory_warned:
            self.memory_warned = True
            log.error("--max-memory-per-child %g MB is below what a fresh worker uses (%.0f MB RSS after %.1fs): "
                      "workers are replaced with a back-off of up to %.0fs; raise the limit",
                      self.max_memory_mb, rss, uptime, MAX_BACKOFF)
        return delay

    def _check_memory(self) -> None:
        """Tell workers over ``max_memory_mb`` RSS to stop gracefully (they are then replaced)."""
        if not self.max_memory_mb or self.stopping:
            return
        import psutil

        for pid, slot in list(self.children.items()):
            if pid in self.recycling or slot < 0:  # the scheduler and metrics children are not workers
                continue
            try:
                rss_mb = psutil.Process(pid).memory_info().rss / (1024 * 1024)
            except psutil.Error:
                continue
            if rss_mb > self.max_memory_mb:
                log.warning("worker %d uses %.0f MB (limit %g MB): recycling it after its running tasks",
                            pid, rss_mb, self.max_memory_mb)
                self.recycling.add(pid)
                self.recycled_rss[pid] = rss_mb
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, due in list(self.restart_due.items()):
            if due <= now and not self.stopping:
                del self.restart_due[slot]
                try:
                    self._spawn(slot)
                except OSError as exc:  # fork refused (EAGAIN, ENOMEM): try again shortly
                    log.error("cannot start %s (slot %d): %s; retrying in 1s", _kind(slot), slot, exc)
                    self.restart_due[slot] = now + 1.0

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------ main loop

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return
        self.signals_seen += 1
        if self.signals_seen == 1 and sig != signal.SIGQUIT:
            log.info("%s received: stopping workers gracefully (up to %gs); send again to stop at once",
                     signal.Signals(sig).name, self.config.shutdown_timeout)
            self.stopping = True
            self.restart_due.clear()
            self.kill_at = time.monotonic() + self.config.shutdown_timeout + KILL_GRACE
            self._signal_all(signal.SIGTERM)
        else:
            log.info("%s received: stopping workers now", signal.Signals(sig).name)
            self.stopping = True
            self.restart_due.clear()
            self.kill_at = min(self.kill_at or float("inf"), time.monotonic() + KILL_GRACE)
            self._signal_all(signal.SIGQUIT)

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        _set_title(f"fastq-supervisor: master [{self.app_name}]")
        log.info("supervisor %d starting %d worker(s) for %s", self.pid, self.processes, self.app_name)
        _preload()
        for slot in range(self.processes):
            self._spawn(slot)
        if self.scheduler is not None:
            self._spawn(SCHEDULER_SLOT)
        if self.metrics is not None:
            self._spawn(METRICS_SLOT)
        while True:
            info = signal.sigtimedwait(HANDLED, 0.5)
            if info is not None:
                self._on_signal(info.si_signo)
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - a failed fork (EAGAIN) or a bug: keep supervising
                log.exception("supervisor: unexpected error; carrying on")
                time.sleep(0.5)
            if self.stopping and not self.children:
                break
        log.info("supervisor %d stopped", self.pid)
        if self.metrics is not None:
            self.metrics.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        return 0

    def _tick(self) -> None:
        """Reap children, then kill late ones (stopping) or check memory and restart due slots."""
        self._reap()
        if self.stopping:
            if self.children and self.kill_at is not None and time.monotonic() >= self.kill_at:
                log.error("killing %d child process(es) that did not stop in time: %s", len(self.children),
                          sorted(self.children), extra=lifecycle("children_killed", pids=sorted(self.children)))
                self._signal_all(signal.SIGKILL)
                self.kill_at = None
        else:
            self._check_memory()
            self._restart_due()


def _preload() -> None:
    """Before the first fork: import what every worker imports (``fastq.server.worker``, uvloop), so
    that the children share those pages copy-on-write instead of each loading its own copy, then
    ``gc.freeze()`` what the parent holds, so that the children's collections never write to (and so
    copy) the pages of those objects; the scripts' SHA1s are computed here once for all of them.
    bench/memory.py measures the effect (USS and PSS per child)."""
    import fastq.server.worker  # noqa: F401
    from fastq._rdb.scripts import SCRIPTS

    for script in SCRIPTS.values():
        script.sha  # noqa: B018 - computed once here, shared by every child
    if not os.environ.get("FASTQ_NO_UVLOOP"):  # the loop fastq.server.worker.new_event_loop picks
        try:
            import uvloop  # noqa: F401
        except ImportError:  # pragma: no cover - uvloop is a default dependency on POSIX
            pass
    gc.freeze()


def _exit_fields(status: int, **fields: Any) -> dict[str, Any]:
    """How a child ended, for structured logs: ``exit_code`` or ``signal`` (its name)."""
    if os.WIFSIGNALED(status):
        try:
            fields["signal"] = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:  # pragma: no cover
            fields["signal"] = str(os.WTERMSIG(status))
    else:
        fields["exit_code"] = os.waitstatus_to_exitcode(status)
    return fields


def import_app(spec: str) -> Any:
    """Resolve ``module:attribute`` (attribute may be dotted) to a ServeMux or handler."""
    from fastq._imports import load_object
    from fastq.errors import AppImportError
    from fastq.mux import ServeMux

    obj = load_object(spec)
    if not isinstance(obj, ServeMux) and not callable(obj):
        raise AppImportError(f"APP {spec!r} is a {type(obj).__name__}, not a ServeMux or a handler callable")
    return obj
