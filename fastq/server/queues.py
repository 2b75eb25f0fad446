"""Queue order for each dequeue call: weighted random (Asynq's default) or strict.

Only names: the keys of a dequeue call are ``fastq._rdb.worker``'s business.
"""
from __future__ import annotations

import logging
import random
import time
from functools import reduce
from math import gcd

log = logging.getLogger("fastq.processor")


class QueueSelector:
    """Gives, for each dequeue call, the queues to try in order.

    Weighted: each queue appears ``weight / gcd`` times in a list that is
    shuffled and then de-duplicated, so a queue comes first with probability
    proportional to its weight (6/3/1 gives about 60/30/10 %). Strict: fixed
    order by weight, highest first. A queue can be skipped for a while
    (``skip``: its keys have the wrong type).
    """

    def __init__(self, queues: dict[str, int], strict: bool = False, rng: random.Random | None = None) -> None:
        self.queues = dict(queues)
        self.strict = strict
        self._rng = rng or random.Random()
        divisor = reduce(gcd, self.queues.values())
        self._bag = [name for name, w in self.queues.items() for _ in range(w // divisor)]
        fixed = strict or len(self.queues) == 1
        self._fixed = sorted(self.queues, key=lambda n: -self.queues[n]) if fixed else None
        self._skipped: dict[str, float] = {}  # queue -> monotonic time it may be tried again

    def order(self) -> list[str]:
        """Every queue, in the order of one dequeue call (do not modify the list)."""
        if self._fixed is not None:
            return self._fixed
        bag = self._bag[:]
        self._rng.shuffle(bag)
        return list(dict.fromkeys(bag))

    def next(self) -> list[str]:
        """The queues to try in one dequeue call, in order, less those skipped for now."""
        if not self._skipped:
            return self.order()
        now = time.monotonic()
        for q, until in list(self._skipped.items()):
            if until <= now:
                del self._skipped[q]
                log.info("queue %s is tried again", q)
        return [q for q in self.order() if q not in self._skipped]

    def skip(self, queue: str, seconds: float) -> None:
        """Leave ``queue`` out of the next ``seconds`` of dequeue calls."""
        self._skipped[queue] = time.monotonic() + seconds
