"""AppTask: a function decorated with ``@app.task``, enqueued by calling ``.enqueue(...)``.

``AppTask`` and ``TaskWithOptions`` (what ``.options(...)`` returns) share the enqueue
methods (``_Enqueuer``); ``handler_for`` builds the ``fastq.Task`` handler the App's mux runs.
"""
from __future__ import annotations

import functools
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Generic,
    Iterable,
    Mapping,
    Optional,
    ParamSpec,
    TypeVar,
    Union,
)

from fastq.app.backoff import RetryPolicy
from fastq.app.payload import DEFAULT_RESULT_RETENTION, ArchivedError, Signature
from fastq.app.ref import TaskRef
from fastq.errors import PayloadError, Retry, RevokeTask, SkipRetry
from fastq.mux import is_async_handler
from fastq.options import check_option_names, plan_enqueue
from fastq.task import Task, TaskInfo, TaskState

if TYPE_CHECKING:
    from fastq.app.app import App
    from fastq.app.canvas import Signature as StepSignature

__all__ = ["AppTask", "ArchivedError", "TaskWithOptions", "Arguments", "DEFAULT_RESULT_RETENTION"]

P = ParamSpec("P")
R = TypeVar("R")


# One item of enqueue_many: a tuple of positional arguments or a dict of keyword arguments.
Arguments = Union[tuple[Any, ...], Mapping[str, Any]]


class _Enqueuer(Generic[P, R]):
    """The enqueue methods, with the options of an ``AppTask`` or a ``TaskWithOptions``."""

    _task: AppTask[P, R]
    _options: dict[str, Any]

    def options(self, **options: Any) -> TaskWithOptions[P, R]:
        """The same task with enqueue options for the calls made through it (``queue``,
        ``process_in``, ``process_at``, ``task_id``, ``unique``, ``group``, ``deadline``,
        ``timeout``, ``max_retry``, ``retention``), merged over this one's. Checked now."""
        merged = {**self._options, **options}
        _check_options(self._task.name, merged)
        return TaskWithOptions(self._task, merged)

    def _message(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], index: Optional[int] = None) -> Task:
        payload = self._task.signature.dump_args(args, kwargs, index)
        return Task._trusted(self._task.name, payload, {})

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskRef:
        """Write the call to Redis (the arguments as JSON, checked against the type hints) and
        return its ``TaskRef``. ``TaskArgumentError`` names a parameter that does not fit; then
        nothing is written. In ``with app.eager():`` the task runs here instead."""
        task = self._message(args, kwargs)
        app = self._task.app
        if app.is_eager:
            from fastq.app.eager import run_eager

            return run_eager(self._task, task, self._options)
        return TaskRef(app.client.enqueue(task, **self._options), task=self._task)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskRef:
        """``enqueue`` for async code (through the App's ``AsyncClient`` of the running loop)."""
        task = self._message(args, kwargs)
        app = self._task.app
        if app.is_eager:
            from fastq.app.eager import arun_eager

            return await arun_eager(self._task, task, self._options)
        return TaskRef(await app.async_client().enqueue(task, **self._options), task=self._task)

    def _messages(self, calls: Iterable[Arguments]) -> list[Task]:
        if isinstance(calls, (str, bytes, Mapping)):
            raise TypeError(f"enqueue_many() takes an iterable of calls (tuples of positional arguments or dicts "
                            f"of keyword arguments), not a {type(calls).__name__}")
        out = []
        for i, call in enumerate(calls):
            if isinstance(call, tuple):
                out.append(self._message(call, {}, i))
            elif isinstance(call, Mapping):
                out.append(self._message((), call, i))
            else:
                raise TypeError(f"{self._task.name} enqueue_many(): item {i} is a {type(call).__name__}; give a tuple "
                                f"of positional arguments or a dict of keyword arguments")
        return out

    def enqueue_many(self, calls: Iterable[Arguments]) -> list[TaskRef]:
        """Enqueue one task per call, each a tuple of positional arguments (``("a@b.c", "hi")``) or
        a dict of keyword arguments (``{"to": "a@b.c", "subject": "hi"}``), with this task's
        options, through ``Client.enqueue_many`` (one script call per 1,000 tasks). Every call is
        checked before anything is written: ``TaskArgumentError.index`` says which one failed."""
        tasks = self._messages(calls)
        app = self._task.app
        if app.is_eager:
            from fastq.app.eager import run_eager

            return [run_eager(self._task, task, self._options) for task in tasks]
        return [TaskRef(info, task=self._task) for info in app.client.enqueue_many(tasks, **self._options)]

    async def aenqueue_many(self, calls: Iterable[Arguments]) -> list[TaskRef]:
        """``enqueue_many`` for async code."""
        tasks = self._messages(calls)
        app = self._task.app
        if app.is_eager:
            from fastq.app.eager import arun_eager

            return [await arun_eager(self._task, task, self._options) for task in tasks]
        infos = await app.async_client().enqueue_many(tasks, **self._options)
        return [TaskRef(info, task=self._task) for info in infos]


class TaskWithOptions(_Enqueuer[P, R]):
    """An App task with per-call enqueue options (``task.options(queue="low", process_in=60)``)."""

    def __init__(self, task: AppTask[P, R], options: dict[str, Any]) -> None:
        self._task = task
        self._options = options

    @property
    def task(self) -> AppTask[P, R]:
        return self._task

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"<{self._task.name} task with options {shown}>"


class AppTask(_Enqueuer[P, R]):
    """A function registered with ``@app.task``: call it to run it in-process, ``.enqueue(...)``
    (or ``await .aenqueue(...)``) to run it on a worker.

    ``name`` is the Asynq task type, ``queue``, ``max_retry``, ``timeout`` and ``retention`` its
    default enqueue options, ``retry_backoff`` and ``retry_on`` its retry policy, ``handler``
    the ``fastq.Task`` handler the App's mux runs for it.
    """

    def __init__(self, app: App, fn: Callable[P, R], name: str, options: dict[str, Any],
                 retry_backoff: Optional[RetryPolicy], retry_on: Optional[tuple[type[BaseException], ...]]) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.signature = Signature(fn, name)
        self.retry_backoff = retry_backoff
        self.retry_on = retry_on
        self._task = self
        self._options = options
        self.handler = handler_for(self)
        functools.update_wrapper(self, fn)

    @property
    def queue(self) -> str:
        queue: str = self._options.get("queue", "default")
        return queue

    @property
    def default_options(self) -> dict[str, Any]:
        """The enqueue options every call starts from."""
        return dict(self._options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as a plain call (no payload, no queue)."""
        return self.fn(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> StepSignature:
        """A signature of this task for a workflow (``fastq.chain``, ``group``, ``chord``): the
        arguments given now; in a chain or as a chord's callback the result before it comes first.
        ``.set(queue=..., ...)`` adds enqueue options."""
        from fastq.app.canvas import Signature

        return Signature(self, args, kwargs)

    def ref(self, task_id: str, *, queue: Optional[str] = None) -> TaskRef:
        """A ``TaskRef`` for a task of this type enqueued earlier (e.g. its ID came back in an HTTP
        request): ``result()`` waits for it as for a fresh ref. Nothing is read from Redis here:
        the ref's ``info`` holds only the ID, the queue (default: this task's) and the type."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"task_id must be a non-empty str, got {task_id!r}")
        info = TaskInfo(task_id, queue or self.queue, self.name, b"", TaskState.PENDING)
        return TaskRef(info, task=self)

    def __repr__(self) -> str:
        return f"<App task {self.name!r} ({getattr(self.fn, '__qualname__', self.fn)}) queue={self.queue!r}>"


def _check_options(name: str, options: dict[str, Any]) -> None:
    check_option_names(options)
    plan_enqueue(Task._trusted(name, b"", {}), options)  # InvalidOptionError names a bad value


def _not_retried(task: AppTask[Any, Any], exc: Exception) -> Optional[ArchivedError]:
    """The error that archives ``exc`` at once, or None when ``exc`` is retried as it is."""
    if isinstance(exc, (SkipRetry, RevokeTask, Retry)) or task.retry_on is None or isinstance(exc, task.retry_on):
        return None
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    names = ", ".join(t.__name__ for t in task.retry_on) or "nothing"
    return ArchivedError(f"{text} (not retried: retry_on of {task.name!r} is {names})")


class _RetryPolicy:
    """Around a task function's call: an exception outside ``retry_on`` leaves as ``SkipRetry``
    (archived at once, the original as its cause); others, and ``fastq.Retry``, as they are."""

    __slots__ = ("task",)

    def __init__(self, task: AppTask[Any, Any]) -> None:
        self.task = task

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException], tb: Any) -> None:
        if isinstance(exc, Exception):
            archived = _not_retried(self.task, exc)
            if archived is not None:
                raise archived from exc


def handler_for(task: AppTask[Any, Any]) -> Callable[[Task], Any]:
    """The ``fastq.Task`` handler of an App task: decode the payload (a payload that does not fit
    archives the task with the reason), call the function, turn an exception outside
    ``retry_on`` into ``SkipRetry`` (archived at once) and the return value into result bytes."""
    sig, fn = task.signature, task.fn

    def arguments(message: Task) -> tuple[list[Any], dict[str, Any]]:
        try:
            return sig.load_args(message.payload)
        except PayloadError as exc:
            raise ArchivedError(str(exc)) from exc

    def result(value: Any) -> Optional[bytes]:
        try:
            return sig.dump_result(value)
        except TypeError as exc:
            raise ArchivedError(str(exc)) from exc

    policy = _RetryPolicy(task)
    if is_async_handler(fn):
        async_fn: Callable[..., Awaitable[Any]] = fn

        async def run_async(message: Task) -> Optional[bytes]:
            args, kwargs = arguments(message)
            with policy:
                value = await async_fn(*args, **kwargs)
            return result(value)

        run_async.__qualname__ = run_async.__name__ = f"task {task.name}"
        return run_async

    def run(message: Task) -> Optional[bytes]:
        args, kwargs = arguments(message)
        with policy:
            value = fn(*args, **kwargs)
        return result(value)

    run.__qualname__ = run.__name__ = f"task {task.name}"
    return run
