"""``@app.task(rate_limit=..., rate_key=..., concurrency_limit=..., concurrency_key=...)``: the
App's side of ``fastq.server.limits``.

The options are checked when the task is declared (``InvalidOptionError`` naming the task and
the option). A key function is called with the task's arguments by name (``lambda customer_id,
**_: customer_id``): the declaration checks that it accepts every parameter of the task that way.
At run time the worker decodes the payload, binds it to the task's signature (defaults applied)
and calls the key function; one that raises or returns something else than a ``str`` archives
that task with the reason (``fastq.server.limits``).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

from fastq.app.payload import Signature
from fastq.errors import InvalidOptionError
from fastq.server.limits import TaskLimits
from fastq.task import Task

__all__ = ["task_limits"]


def task_limits(name: str, fn: Callable[..., Any], signature: Signature, rate_limit: Optional[str],
                rate_key: Optional[Callable[..., Any]], concurrency_limit: Optional[int],
                concurrency_key: Optional[Callable[..., Any]]) -> Optional[TaskLimits]:
    """The ``TaskLimits`` of task ``name`` (None when it has none); raises ``InvalidOptionError``."""
    if rate_limit is None and concurrency_limit is None and rate_key is None and concurrency_key is None:
        return None
    if concurrency_limit is not None and (isinstance(concurrency_limit, bool) or not isinstance(concurrency_limit, int)
                                          or concurrency_limit < 1):
        raise InvalidOptionError(f"task {name!r}: concurrency_limit must be an integer >= 1, got {concurrency_limit!r}")
    try:
        params = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: keys get no check
        params = None
    keys = {}
    for option, key in (("rate_key", rate_key), ("concurrency_key", concurrency_key)):
        if key is None:
            continue
        if not callable(key):
            raise InvalidOptionError(f"task {name!r}: {option} must be a function of the task's arguments "
                                     f"returning a str, got {type(key).__name__}")
        if params is not None:
            _check_accepts(name, option, key, params)
        keys[option] = _by_name(key, signature, params)
    try:
        return TaskLimits(rate=rate_limit, concurrency=concurrency_limit or 0,
                          rate_key=keys.get("rate_key"), concurrency_key=keys.get("concurrency_key"))
    except InvalidOptionError as exc:
        raise InvalidOptionError(f"task {name!r}: {exc}") from None


def _check_accepts(name: str, option: str, key: Callable[..., Any], params: inspect.Signature) -> None:
    """The key function must take each of the task's parameters by name."""
    try:
        key_sig = inspect.signature(key)
    except (TypeError, ValueError):
        return
    names = [p.name for p in params.parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)]
    try:
        key_sig.bind(**{n: None for n in names})
    except TypeError as exc:
        shown = ", ".join(names) or "no arguments"
        raise InvalidOptionError(f"task {name!r}: {option} is called with the task's arguments by name ({shown}), "
                                 f"which it does not accept: {exc} (add **_ to ignore the others)") from None


def _by_name(key: Callable[..., Any], signature: Signature, params: Optional[inspect.Signature]
             ) -> Callable[[Task], Any]:
    """``key`` as a function of the ``fastq.Task``: payload decoded and bound to the task's parameters."""
    def of_task(task: Task) -> Any:
        args, kwargs = signature.load_args(task.payload)
        if params is None:
            return key(*args, **kwargs)
        bound = params.bind(*args, **kwargs)
        bound.apply_defaults()
        named = dict(bound.arguments)
        for p in params.parameters.values():  # **kwargs of the task: passed on as they are
            if p.kind is p.VAR_KEYWORD:
                named.update(named.pop(p.name, {}))
        return key(**named)

    return of_task
