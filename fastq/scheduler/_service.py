"""What the Scheduler and the PeriodicTaskManager share: the ``run()`` / ``start()`` / ``stop()`` life
cycle around an ``async serve(stop_event)``, signal handling for a process of its own, and the
default heartbeat interval. Both import this module; it imports neither (no cycle)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Optional

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "serve_with_signals"]

log = logging.getLogger("fastq.scheduler")

DEFAULT_HEARTBEAT_INTERVAL = 10.0


class _Service:
    """``run()`` / ``start()`` / ``stop()`` around an ``async serve(stop_event)``."""

    def _init_service(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop_event: Optional[asyncio.Event] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()  # set once serve() has started (or failed to)
        self._state = "new"

    async def serve(self, stop: Optional[asyncio.Event] = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_new(self) -> None:
        if self._state != "new":
            state = "already running" if self._state == "running" else "stopped"
            raise RuntimeError(f"{type(self).__name__} is {state}; create a new one")

    def _begin(self, stop: Optional[asyncio.Event]) -> asyncio.Event:
        self._check_new()
        self._state = "running"
        self._loop = asyncio.get_running_loop()
        self._stop_event = stop or asyncio.Event()
        return self._stop_event

    def stop(self, timeout: Optional[float] = 30.0) -> None:
        """Ask ``serve()`` to stop (thread-safe); after ``start()``, also wait for the thread."""
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed meanwhile
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def start(self, timeout: float = 30.0) -> None:
        """Run ``serve()`` in a background thread; return once it started, re-raising a start failure."""
        self._check_new()
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} was started already")
        failure: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of start()
                failure.append(exc)
                if self._ready.is_set():
                    log.exception("%s stopped with an error", type(self).__name__)
            finally:
                self._ready.set()

        self._thread = threading.Thread(target=target, name=f"fastq-{type(self).__name__}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{type(self).__name__} did not start within {timeout}s")
        if failure:
            self._thread.join()
            raise failure[0]

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (or ``stop()`` from another thread), then shut down cleanly."""
        asyncio.run(serve_with_signals(self, (signal.SIGTERM, signal.SIGINT)))


async def serve_with_signals(service: _Service, signals: tuple[int, ...], parent_pid: Optional[int] = None,
                             stop_event: Optional[threading.Event] = None) -> None:
    """``service.serve()`` until one of ``signals``, ``stop_event`` or the death of ``parent_pid``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: int) -> None:
        log.info("%s received: stopping the scheduler", signal.Signals(sig).name)
        stop.set()

    installed = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (ValueError, RuntimeError):  # not the main thread: rely on stop()
            pass
    watchers = []
    if parent_pid is not None:
        watchers.append(asyncio.create_task(_watch_parent(stop, parent_pid)))
    if stop_event is not None:
        event = stop_event

        def bridge() -> None:
            event.wait()
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop ended first
                pass

        threading.Thread(target=bridge, daemon=True, name="fastq-scheduler-stop").start()
    try:
        await service.serve(stop)
    finally:
        for task in watchers:
            task.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _watch_parent(stop: asyncio.Event, parent_pid: int) -> None:
    """Stop if the process that forked us is gone (we were re-parented)."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent process %d is gone: stopping the scheduler", parent_pid)
            stop.set()
            return
        await asyncio.sleep(1.0)
