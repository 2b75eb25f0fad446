"""ServeMux: routes a task to a handler by its type, as Asynq's ServeMux does.

Matching: the exact type first, else the longest registered pattern that is a
prefix of the type (``"email:"`` matches ``"email:welcome"``), else the
not-found handler, which raises ``HandlerNotFoundError`` (a normal failure:
the task is retried). Handlers are ``def`` or ``async def`` functions taking a
``fastq.Task``; middleware wraps handlers, the first registered outermost.
"""
from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union, overload

from fastq.errors import HandlerNotFoundError
from fastq.task import Task

Handler = Callable[[Task], Union[Any, Awaitable[Any]]]
Middleware = Callable[[Handler], Handler]
H = TypeVar("H", bound=Callable[..., Any])

__all__ = ["ServeMux", "Handler", "Middleware", "is_async_handler"]


def is_async_handler(fn: Any) -> bool:
    """True for ``async def`` functions (also behind functools.partial or a __call__ method)."""
    while hasattr(fn, "func") and not inspect.iscoroutinefunction(fn):  # functools.partial
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - the method itself is inspected, not callability
    return call is not None and inspect.iscoroutinefunction(call)


class ServeMux:
    """Routes each task to a handler by its type, as Asynq's ``ServeMux``.

    ``mux.handle("email:welcome", fn)`` (or ``@mux.handle("email:welcome")``) registers a
    ``def`` or ``async def`` handler taking a ``fastq.Task``. A task goes to the handler of its
    exact type, else to the longest registered pattern that is a prefix of its type
    (``"report:"`` serves ``"report:daily"``), else to a handler that raises
    ``HandlerNotFoundError`` (the task is retried; ``ServeMux(not_found=handler)`` replaces it,
    e.g. with one that raises ``SkipRetry``). ``mux.use(middleware)`` wraps every
    handler. A ``ServeMux`` is itself a handler: give it to ``fastq.Worker`` or name it as
    ``fastq-supervisor``'s APP.
    """

    def __init__(self, *, not_found: Optional[Handler] = None) -> None:
        if not_found is not None and not callable(not_found):
            raise TypeError(f"not_found handler is not callable: {not_found!r}")
        self._not_found: Handler = not_found if not_found is not None else _not_found
        self._handlers: dict[str, Handler] = {}
        self._middleware: list[Middleware] = []
        self._cache: dict[str, tuple[Handler, bool]] = {}

    @overload
    def handle(self, pattern: str) -> Callable[[H], H]: ...

    @overload
    def handle(self, pattern: str, handler: H) -> H: ...

    def handle(self, pattern: str, handler: Optional[H] = None) -> Any:
        """Register ``handler`` for ``pattern``; without ``handler``, work as a decorator."""
        if handler is None:
            def decorator(fn: H) -> H:
                self.handle(pattern, fn)
                return fn
            return decorator
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError("handler pattern must be a non-blank str")
        if not callable(handler):
            raise TypeError(f"handler for {pattern!r} is not callable: {handler!r}")
        if pattern in self._handlers:
            raise ValueError(f"a handler is already registered for {pattern!r}")
        self._handlers[pattern] = handler
        self._cache.clear()
        return handler

    def use(self, *middleware: Middleware) -> None:
        """Add middleware: ``mw(handler) -> handler``; the first added runs outermost."""
        for mw in middleware:
            if not callable(mw):
                raise TypeError(f"middleware is not callable: {mw!r}")
        self._middleware.extend(middleware)
        self._cache.clear()

    @property
    def patterns(self) -> list[str]:
        return sorted(self._handlers)

    def _match(self, task_type: str) -> Handler:
        handler = self._handlers.get(task_type)
        if handler is not None:
            return handler
        best = ""
        for pattern in self._handlers:
            if task_type.startswith(pattern) and len(pattern) > len(best):
                best = pattern
        if best:
            return self._handlers[best]
        return self._not_found

    def resolve(self, task_type: str) -> tuple[Handler, bool]:
        """The handler for ``task_type`` with middleware applied, and whether it is async."""
        hit = self._cache.get(task_type)
        if hit is None:
            handler = self._match(task_type)
            for mw in reversed(self._middleware):
                handler = mw(handler)
            hit = (handler, is_async_handler(handler))
            if len(self._cache) < 10_000:  # task types are few; bound it against junk types
                self._cache[task_type] = hit
        return hit

    def __call__(self, task: Task) -> Any:
        """A ServeMux is itself a handler (sync call; async handlers return a coroutine)."""
        return self.resolve(task.type)[0](task)


def _not_found(task: Task) -> None:
    raise HandlerNotFoundError(task.type)
