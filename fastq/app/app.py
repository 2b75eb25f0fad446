"""App: tasks declared with a decorator, their retry policies, and the worker settings that run them."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import weakref
from contextvars import ContextVar
from typing import Any, Callable, ContextManager, Iterable, Literal, Optional, ParamSpec, TypeVar, Union, overload

from fastq.app.backoff import RetryPolicy, check_policy
from fastq.app.limits import task_limits
from fastq.app.task import DEFAULT_RESULT_RETENTION, AppTask, _check_options
from fastq.client import AsyncClient, Client
from fastq.errors import HandlerNotFoundError, InvalidOptionError, Retry, SkipRetry
from fastq.mux import Middleware, ServeMux
from fastq.options import DEFAULT_QUEUE
from fastq.retry import default_retry_delay
from fastq.server.config import WorkerConfig
from fastq.server.limits import TaskLimits
from fastq.task import Task

__all__ = ["App"]

log = logging.getLogger("fastq.app")

P = ParamSpec("P")
R = TypeVar("R")

_WORKER_FIELDS = frozenset(f.name for f in dataclasses.fields(WorkerConfig)) - {"retry_delay", "redis_url", "limits"}
_UNKNOWN = ("retry", "archive")


def _exception_types(value: Any, name: str) -> Optional[tuple[type[BaseException], ...]]:
    if value is None:
        return None
    types = value if isinstance(value, (tuple, list)) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise InvalidOptionError(f"task {name!r}: retry_on must be an exception type or a tuple of them, "
                                     f"got {t!r}")
    return tuple(types)


class App:
    """Tasks the way Python teams write them: functions with a decorator, called with ``.enqueue()``.

    ``App(redis_url=None, *, unknown="retry", retry_backoff=None, middleware=(), **worker_settings)``:
    ``redis_url`` defaults to ``$FASTQ_REDIS_URL`` (read when first needed), else
    ``redis://127.0.0.1:6379/0``. ``unknown="archive"`` archives tasks of a type no handler
    serves at once (Asynq, and the default ``"retry"``, retry them). ``retry_backoff`` is the
    policy of tasks that have none of their own (default: Asynq's). ``worker_settings`` are
    ``WorkerConfig`` fields (``queues``, ``concurrency``, ``error_handler``, ``hooks``,
    ``is_failure``, ``group_aggregator``, ...), given to ``worker_config()``.

    ``@app.task(...)`` registers a function; ``app.mux`` is the ``ServeMux`` that runs every
    task; ``fastq.Worker(app)`` (or ``Worker(app.mux, app.worker_config())``) serves them.
    """

    def __init__(self, redis_url: Optional[str] = None, *, unknown: Literal["retry", "archive"] = "retry",
                 retry_backoff: Optional[RetryPolicy] = None, middleware: Iterable[Middleware] = (),
                 **worker_settings: Any) -> None:
        if redis_url is not None and not isinstance(redis_url, str):
            raise TypeError(f"App() takes a Redis URL (str) or None, not {type(redis_url).__name__}")
        if unknown not in _UNKNOWN:
            raise InvalidOptionError(f"App(unknown=...) must be 'retry' or 'archive', got {unknown!r}")
        bad = sorted(set(worker_settings) - _WORKER_FIELDS)
        if bad:
            hint = " (retry delays are set by retry_backoff and per task)" if "retry_delay" in bad else ""
            raise TypeError(f"App() got an unknown setting {bad[0]!r}{hint}; worker settings are WorkerConfig "
                            f"fields: {', '.join(sorted(_WORKER_FIELDS))}")
        self.redis_url = redis_url
        self.unknown = unknown
        self.retry_backoff = check_policy(retry_backoff, "App")
        WorkerConfig(**{**worker_settings, "redis_url": redis_url or "redis://127.0.0.1:6379/0"})  # checks values
        self._settings = dict(worker_settings)
        self._tasks: dict[str, AppTask[Any, Any]] = {}
        self._limits: dict[str, TaskLimits] = {}  # rate/concurrency limits by task name
        self._mux = ServeMux(not_found=self._not_found if unknown == "archive" else None)
        self._mux.use(*middleware)
        self._eager: ContextVar[bool] = ContextVar(f"fastq_app_eager_{id(self)}", default=False)
        self._lock = threading.Lock()
        self._client: Optional[Client] = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = \
            weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<fastq.App: {len(self._tasks)} task(s), unknown={self.unknown!r}>"

    # ----------------------------------------------------------- declaring tasks

    @overload
    def task(self, fn: Callable[P, R], /) -> AppTask[P, R]: ...

    @overload
    def task(self, fn: None = None, /, *, name: Optional[str] = None, queue: str = DEFAULT_QUEUE,
             max_retry: Optional[int] = None, timeout: Optional[float] = None, retention: Optional[float] = None,
             retry_backoff: Optional[RetryPolicy] = None,
             retry_on: Union[type[BaseException], tuple[type[BaseException], ...], None] = None,
             rate_limit: Optional[str] = None, rate_key: Optional[Callable[..., str]] = None,
             concurrency_limit: Optional[int] = None, concurrency_key: Optional[Callable[..., str]] = None,
             ) -> Callable[[Callable[P, R]], AppTask[P, R]]: ...

    def task(self, fn: Optional[Callable[P, R]] = None, /, *, name: Optional[str] = None, queue: str = DEFAULT_QUEUE,
             max_retry: Optional[int] = None, timeout: Optional[float] = None, retention: Optional[float] = None,
             retry_backoff: Optional[RetryPolicy] = None,
             retry_on: Union[type[BaseException], tuple[type[BaseException], ...], None] = None,
             rate_limit: Optional[str] = None, rate_key: Optional[Callable[..., str]] = None,
             concurrency_limit: Optional[int] = None, concurrency_key: Optional[Callable[..., str]] = None,
             ) -> Union[AppTask[P, R], Callable[[Callable[P, R]], AppTask[P, R]]]:
        """Register a function (``def`` or ``async def``) as a task; use as ``@app.task`` or ``@app.task(...)``.

        ``name``: the Asynq task type (default ``module.qualname``; give a stable one, e.g.
        ``"email:send"``, for Go producers). ``queue``, ``max_retry`` (default 25), ``timeout``
        (seconds; default Asynq's 30 minutes) and ``retention`` (seconds a succeeded task is kept
        with its result; default 1 hour when the return annotation is not ``None``, else 0) are
        the default enqueue options. ``retry_backoff``: a ``fastq.Backoff`` or a callable
        ``(retry_count, exc) -> seconds`` (default: the App's, else Asynq's). ``retry_on``: the
        exception types that are retried; any other exception archives the task at once.
        ``rate_limit`` (``"100/s"``, ``"/m"``, ``"/h"``) and ``concurrency_limit`` (at most that many
        running) hold across every worker, per task name, or per key with ``rate_key`` /
        ``concurrency_key`` (functions of the task's arguments by name returning a str): see
        ``docs/guide/workflows.md`` ("Rate and concurrency limits").
        """
        limits = (rate_limit, rate_key, concurrency_limit, concurrency_key)

        def register(f: Callable[P, R]) -> AppTask[P, R]:
            return self._register(f, name, queue, max_retry, timeout, retention, retry_backoff, retry_on, limits)

        if fn is not None:
            return register(fn)
        return register

    def _register(self, fn: Callable[P, R], name: Optional[str], queue: str, max_retry: Optional[int],
                  timeout: Optional[float], retention: Optional[float], retry_backoff: Optional[RetryPolicy],
                  retry_on: Any, limits: tuple[Any, ...] = (None, None, None, None)) -> AppTask[P, R]:
        if not callable(fn):
            raise TypeError(f"@app.task decorates a function, not {type(fn).__name__}")
        if isinstance(fn, AppTask):
            raise TypeError(f"{fn.name!r} is an App task already")
        if name is None:
            name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        options: dict[str, Any] = {"queue": queue}
        if max_retry is not None:
            options["max_retry"] = max_retry
        if timeout is not None:
            options["timeout"] = timeout
        _check_options(name, options)  # the type name and the values, before anything is registered
        policy = check_policy(retry_backoff, f"task {name!r}:")
        task: AppTask[P, R] = AppTask(self, fn, name, options, policy, _exception_types(retry_on, name))
        if retention is None:
            retention = DEFAULT_RESULT_RETENTION if task.signature.returns_value else 0
        if retention:
            options["retention"] = retention
            _check_options(name, options)
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is registered already ({self._tasks[name]!r})")
        rule = task_limits(name, fn, task.signature, *limits)
        self._mux.handle(name, task.handler)
        if rule is not None:
            self._limits[name] = rule
        self._tasks[name] = task
        return task

    def include(self, mux: ServeMux) -> None:
        """Serve a plain ``ServeMux``'s handlers too (with its middleware, inside the App's). The
        handlers registered on it so far are copied; a pattern the App has already is an error."""
        if not isinstance(mux, ServeMux):
            raise TypeError(f"include() takes a fastq.ServeMux, not {type(mux).__name__}")
        handlers = {pattern: mux.resolve(pattern)[0] for pattern in mux.patterns}
        clash = sorted(set(handlers) & set(self._mux.patterns))
        if clash:
            raise ValueError(f"include(): the App already has a handler for {clash[0]!r}")
        for pattern, handler in handlers.items():
            self._mux.handle(pattern, handler)

    def use(self, *middleware: Middleware) -> None:
        """Add middleware around every task and included handler (the first added runs outermost)."""
        self._mux.use(*middleware)

    @property
    def mux(self) -> ServeMux:
        """The ``ServeMux`` serving every task of the App (and the included muxes), middleware applied."""
        return self._mux

    @property
    def tasks(self) -> dict[str, AppTask[Any, Any]]:
        """The registered tasks by name."""
        return dict(self._tasks)

    @property
    def limits(self) -> dict[str, TaskLimits]:
        """The rate and concurrency limits of the registered tasks, by name (``WorkerConfig.limits``)."""
        return dict(self._limits)

    def _not_found(self, task: Task) -> None:
        error = HandlerNotFoundError(task.type)
        raise SkipRetry(f"{error} (unknown task types are archived: App(unknown='archive'))") from error

    # ----------------------------------------------------------- the worker side

    def retry_delay(self, retried: int, exc: Optional[BaseException] = None, task: Optional[Task] = None) -> float:
        """Seconds before the next retry (``WorkerConfig.retry_delay``): ``fastq.Retry(in_=...)``'s
        delay, else the policy of the task's type, else the App's, else Asynq's default.

        A policy that raises or returns something else than a number >= 0 is logged and
        Asynq's default is used instead (a worker never stops over it)."""
        if isinstance(exc, Retry) and exc.in_ is not None:
            return exc.in_
        app_task = self._tasks.get(task.type) if task is not None else None
        policy = app_task.retry_backoff if app_task is not None and app_task.retry_backoff is not None \
            else self.retry_backoff
        if policy is None:
            return default_retry_delay(retried, exc, task)
        try:
            seconds = policy(retried, exc)  # type: ignore[arg-type]
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                    or seconds < 0:
                raise TypeError(f"returned {seconds!r}, not a number of seconds >= 0")
        except Exception:
            log.exception("retry_backoff of task type %r failed; using the default delay",
                          task.type if task is not None else "?")
            return default_retry_delay(retried, exc, task)
        return float(seconds)

    def queues(self) -> dict[str, int]:
        """The queues a worker of the App serves unless told otherwise: ``default`` and every
        task's queue, weight 1 each (``App(queues=...)`` or ``worker_config(queues=...)`` to choose)."""
        given = self._settings.get("queues")
        if given is not None:
            return dict(WorkerConfig(queues=given, redis_url="redis://").queues)
        names = [DEFAULT_QUEUE] + [t.queue for t in self._tasks.values()]
        return {name: 1 for name in dict.fromkeys(names)}

    def worker_config(self, **overrides: Any) -> WorkerConfig:
        """A ``WorkerConfig`` with the App's settings: its Redis URL, ``retry_delay`` (the tasks'
        policies and ``fastq.Retry``), the worker settings given to ``App()`` and ``queues()``;
        ``overrides`` (any ``WorkerConfig`` field) win."""
        settings: dict[str, Any] = {**self._settings, "queues": self.queues(), "retry_delay": self.retry_delay,
                                    "limits": self.limits}
        if self.redis_url is not None:
            settings["redis_url"] = self.redis_url
        settings.update(overrides)
        return WorkerConfig(**settings)

    def worker_parts(self, config: Optional[WorkerConfig] = None) -> tuple[ServeMux, WorkerConfig]:
        """What ``fastq.Worker(app, config)`` runs: the mux, and ``worker_config()`` when no
        ``config`` is given. A given ``config`` is used as it is, except that Asynq's default
        ``retry_delay`` becomes the App's (so ``fastq-supervisor module:app``, which builds the
        config from its flags, still applies the tasks' retry policies and ``fastq.Retry``)."""
        if config is None:
            return self._mux, self.worker_config()
        if config.retry_delay is default_retry_delay:
            config = dataclasses.replace(config, retry_delay=self.retry_delay)
        if self._limits and not config.limits:
            config = dataclasses.replace(config, limits=self.limits)
        return self._mux, config

    def __call__(self, task: Task) -> Any:
        """An App is a handler too (its mux's), so ``fastq-supervisor module:app`` takes it."""
        return self._mux(task)

    # ----------------------------------------------------------- producing

    @property
    def client(self) -> Client:
        """The App's ``fastq.Client`` (created on first use, shared by threads)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = Client(self.redis_url)
                client = self._client
        return client

    def async_client(self) -> AsyncClient:
        """The App's ``fastq.AsyncClient`` for the running event loop (one per loop)."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = AsyncClient(self.redis_url)
        return client

    def close(self) -> None:
        """Close the App's sync client (its async clients close with ``await app.aclose()``)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the App's clients: the sync one and the one of the running loop."""
        self.close()
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    # ----------------------------------------------------------- tests

    @property
    def is_eager(self) -> bool:
        """Whether ``enqueue()`` runs tasks in-process here (inside ``with app.eager():``)."""
        return self._eager.get()

    def eager(self) -> ContextManager[None]:
        """``with app.eager():`` makes ``enqueue()``/``aenqueue()`` run the task at once, in-process
        (payload checks, JSON round trip and middleware included), and return a ``TaskRef`` whose
        ``.value`` is the return value. An exception of the task is raised by ``enqueue()``."""
        from fastq.app.eager import eager_mode

        return eager_mode(self._eager)
