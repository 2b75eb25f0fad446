"""``PeriodicTaskManager``: keep a Scheduler's entries in step with a config provider (Asynq's, v0.21+).

A provider is any object with ``get_configs()`` (plain or ``async``), or a
plain callable, returning a list of ``PeriodicTaskConfig``. Configs are
identified as in Go: SHA-256 over cronspec + task type + payload + the
sorted option strings (plus the headers, when there are any). Every
``sync_interval`` seconds (default 180) the manager asks again, unregisters
the entries whose config vanished and registers the new ones; unchanged
configs keep their entry (and its history). A failing or invalid first answer
stops ``serve()``/``start()``/``run()`` with ``ConfigProviderError``; later
failures are logged and the current entries stay.

A plain ``get_configs`` runs in a thread, so a provider may read a file or a
database without stalling the scheduler.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, cast

from fastq._gofmt import option_strings
from fastq._validate import positive_seconds
from fastq.errors import ConfigProviderError
from fastq.options import plan_enqueue
from fastq.scheduler._service import DEFAULT_HEARTBEAT_INTERVAL, _Service
from fastq.scheduler.scheduler import Scheduler
from fastq.task import Task

__all__ = ["PeriodicTaskConfig", "PeriodicTaskManager"]

log = logging.getLogger("fastq.scheduler")

DEFAULT_SYNC_INTERVAL = 180.0


@dataclass(frozen=True)
class PeriodicTaskConfig:
    """One periodic task: enqueue ``task`` with ``options`` (as ``Client.enqueue``) on ``cronspec``."""

    cronspec: str
    task: Task
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.cronspec, str) or not self.cronspec.strip():
            raise ValueError(f"PeriodicTaskConfig.cronspec must be a non-empty str, got {self.cronspec!r}")
        if not isinstance(self.task, Task):
            raise TypeError(f"PeriodicTaskConfig.task must be a fastq.Task, not {type(self.task).__name__}")
        if not isinstance(self.options, Mapping):
            raise TypeError(f"PeriodicTaskConfig.options must be a dict, not {type(self.options).__name__}")
        object.__setattr__(self, "options", dict(self.options))  # a private copy: the hash must not change
        plan_enqueue(self.task, dict(self.options))  # unknown names -> TypeError, bad values -> InvalidOptionError

    def hash(self) -> str:
        """Go's ``PeriodicTaskConfig.hash()``: sha256(cronspec, type, payload, sorted option strings), hex."""
        h = hashlib.sha256()
        h.update(self.cronspec.encode())
        h.update(self.task.type.encode())
        h.update(self.task.payload)
        for s in sorted(option_strings(self.options)):
            h.update(s.encode())
        for k in sorted(self.task.headers):  # fastq only: Go's hash ignores headers
            h.update(f"\0{k}={self.task.headers[k]}".encode())
        return h.hexdigest()


def _getter(provider: Any) -> Callable[[], Any]:
    get = getattr(provider, "get_configs", None)
    if callable(get):
        return cast(Callable[[], Any], get)
    if callable(provider) and not isinstance(provider, type):
        return cast(Callable[[], Any], provider)
    raise TypeError(f"provider must have a get_configs() method or be callable, not {type(provider).__name__}")


class PeriodicTaskManager(_Service):
    """Run a ``Scheduler`` whose entries follow ``provider.get_configs()``.

    The other arguments are the Scheduler's; ``sync_interval`` is in seconds.
    """

    def __init__(self, provider: Any, redis: Any = None, *, sync_interval: float = DEFAULT_SYNC_INTERVAL,
                 location: Any = "UTC", heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                 pre_enqueue: Optional[Callable[..., Any]] = None,
                 post_enqueue: Optional[Callable[..., Any]] = None) -> None:
        self._init_service()
        self._get = _getter(provider)
        self.provider = provider
        self.sync_interval = positive_seconds("sync_interval", sync_interval)
        self.scheduler = Scheduler(redis, location=location, heartbeat_interval=heartbeat_interval,
                                   pre_enqueue=pre_enqueue, post_enqueue=post_enqueue)
        self._by_hash: dict[str, str] = {}  # config hash -> entry ID

    async def _fetch(self) -> list[PeriodicTaskConfig]:
        if inspect.iscoroutinefunction(self._get):
            result = await self._get()
        else:
            result = await asyncio.to_thread(self._get)
            if inspect.isawaitable(result):
                result = await result
        if result is None or isinstance(result, (str, bytes, Mapping)):
            raise ConfigProviderError(f"get_configs() must return a list of PeriodicTaskConfig, got {result!r:.80}")
        configs = list(result)
        for i, config in enumerate(configs):
            if not isinstance(config, PeriodicTaskConfig):
                raise ConfigProviderError(f"get_configs() item {i} is a {type(config).__name__}, "
                                          f"not a PeriodicTaskConfig")
        return configs

    def _apply(self, configs: list[PeriodicTaskConfig], strict: bool) -> tuple[int, int]:
        """Unregister vanished configs, register new ones; return (added, removed)."""
        wanted = {c.hash(): c for c in configs}
        added: list[str] = []
        for h, config in wanted.items():
            if h in self._by_hash:
                continue
            try:
                entry_id = self.scheduler.register(config.cronspec, config.task, **dict(config.options))
            except (ValueError, TypeError) as exc:
                if strict:
                    for done in added:
                        self.scheduler.unregister(self._by_hash.pop(done))
                    raise ConfigProviderError(f"invalid periodic task config ({config.cronspec!r}, "
                                              f"{config.task.type!r}): {exc}") from exc
                log.error("skipping periodic task %r %r: %s", config.cronspec, config.task.type, exc)
                continue
            self._by_hash[h] = entry_id
            added.append(h)
            log.info("registered periodic task %r %r as entry %s", config.cronspec, config.task.type, entry_id)
        removed = [h for h in self._by_hash if h not in wanted]
        for h in removed:
            entry_id = self._by_hash.pop(h)
            self.scheduler.unregister(entry_id)
            log.info("unregistered periodic task entry %s", entry_id)
        return len(added), len(removed)

    async def sync(self) -> tuple[int, int]:
        """Ask the provider once and apply the difference; return (added, removed). Errors are logged."""
        try:
            configs = await self._fetch()
        except Exception as exc:  # noqa: BLE001 - keep the entries we have
            log.error("periodic task config sync failed, keeping the current entries: %s", exc)
            return 0, 0
        return self._apply(configs, strict=False)

    async def serve(self, stop: Optional[asyncio.Event] = None) -> None:
        """Initial sync (a failure raises ``ConfigProviderError``), then serve and re-sync until ``stop``."""
        stop = self._begin(stop)
        try:
            try:
                configs = await self._fetch()
            except ConfigProviderError:
                raise
            except Exception as exc:
                raise ConfigProviderError(f"initial call to get_configs() failed: {type(exc).__name__}: {exc}") \
                    from exc
            self._apply(configs, strict=True)
            scheduler = asyncio.create_task(self.scheduler.serve(stop))
            while not self.scheduler._ready.is_set() and not scheduler.done():
                await asyncio.sleep(0.005)
            if scheduler.done():
                await scheduler  # raises what stopped it
            self._ready.set()
            while not stop.is_set() and not scheduler.done():
                try:
                    await asyncio.wait_for(stop.wait(), self.sync_interval)
                except asyncio.TimeoutError:
                    await self.sync()
            stop.set()
            await scheduler
        finally:
            self._state = "stopped"
