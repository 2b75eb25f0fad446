"""Retry back-off policies of App tasks: ``Backoff`` and the callables that stand in for one."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Optional, Union

from fastq.errors import InvalidOptionError

__all__ = ["Backoff", "RetryPolicy", "check_policy"]


def _number(name: str, value: object, minimum: float, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidOptionError(f"Backoff {name} must be a finite number, got {value!r}")
    if not minimum <= value <= maximum:
        upper = "" if maximum == math.inf else f" and at most {maximum:g}"
        raise InvalidOptionError(f"Backoff {name} must be at least {minimum:g}{upper}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off: the delay before retry *n* + 1 (after *n* retries) is
    ``min(base * factor ** n, max)`` seconds, shortened at random by up to ``jitter`` of itself
    (``jitter=0.1``: between 90 % and 100 % of it), so ``max`` is a true upper bound and tasks
    that failed together do not all come back together.

    ``Backoff(base=1, factor=2, max=600, jitter=0.1)``: about 1, 2, 4, 8, ... seconds, then
    10 minutes for every later retry. ``factor=1`` is a fixed delay of ``base`` seconds.
    Workers move due retries to ``pending`` about once a second and store whole seconds, so
    sub-second delays round down.
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = 600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", _number("base", self.base, 0))
        object.__setattr__(self, "factor", _number("factor", self.factor, 1))
        object.__setattr__(self, "max", _number("max", self.max, 0))
        object.__setattr__(self, "jitter", _number("jitter", self.jitter, 0, 1))

    def delay(self, retry_count: int) -> float:
        """Seconds before the retry that follows ``retry_count`` earlier retries."""
        try:
            raw = self.base * self.factor ** max(0, retry_count)
        except OverflowError:
            raw = math.inf
        seconds = min(raw, self.max)
        if self.jitter:
            seconds *= 1.0 - self.jitter * random.random()
        return seconds

    def __call__(self, retry_count: int, exc: Optional[BaseException] = None) -> float:
        return self.delay(retry_count)


RetryPolicy = Union[Backoff, Callable[[int, BaseException], float]]


def check_policy(policy: object, where: str) -> Optional[RetryPolicy]:
    """``policy`` if it is ``None``, a ``Backoff`` or a callable ``(retry_count, exc) -> seconds``."""
    if policy is None or isinstance(policy, Backoff):
        return policy
    if not callable(policy):
        raise InvalidOptionError(f"{where} retry_backoff must be a fastq.Backoff or a callable "
                                 f"(retry_count, exc) -> seconds, got {type(policy).__name__}")
    return policy
