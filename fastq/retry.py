"""Retry policy defaults (Asynq's ``DefaultRetryDelayFunc``)."""
from __future__ import annotations

import random


def default_retry_delay(retried: int, error: BaseException | None = None, task: object = None) -> float:
    """Seconds before retry number ``retried + 1``: n**4 + 15 + rand[0, 30) * (n + 1).

    The Sidekiq formula Asynq uses: the first retry comes 15-44 s after the
    failure and 25 retries span about three weeks.
    """
    n = retried
    return n ** 4 + 15 + random.random() * 30 * (n + 1)
