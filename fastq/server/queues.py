"""Queue order for each dequeue call: weighted random (Asynq's default) or strict."""
from __future__ import annotations

import random
from functools import reduce
from math import gcd

from fastq import keys


class QueueSelector:
    """Gives, for each dequeue call, the queues to try in order with their keys.

    Weighted: each queue appears ``weight / gcd`` times in a list that is
    shuffled and then de-duplicated, so a queue comes first with probability
    proportional to its weight (6/3/1 gives about 60/30/10 %). Strict: fixed
    order by weight, highest first.
    """

    def __init__(self, queues: dict[str, int], strict: bool = False, rng: random.Random | None = None) -> None:
        self.queues = dict(queues)
        self.strict = strict
        self._rng = rng or random.Random()
        divisor = reduce(gcd, self.queues.values())
        self._bag = [name for name, w in self.queues.items() for _ in range(w // divisor)]
        self._keys = {
            name: [keys.pending_key(name), keys.paused_key(name), keys.active_key(name), keys.lease_key(name)]
            for name in self.queues
        }
        self._prefix = {name: keys.task_key_prefix(name) for name in self.queues}
        fixed = sorted(self.queues, key=lambda n: -self.queues[n]) if strict or len(self.queues) == 1 else None
        self._fixed = self._build(fixed) if fixed else None

    def _build(self, order: list[str]) -> tuple[list[str], list[str], list[str]]:
        dequeue_keys = [k for name in order for k in self._keys[name]]
        return order, dequeue_keys, [self._prefix[name] for name in order]

    def order(self) -> list[str]:
        if self._fixed is not None:
            return self._fixed[0]
        bag = self._bag[:]
        self._rng.shuffle(bag)
        return list(dict.fromkeys(bag))

    def next(self) -> tuple[list[str], list[str], list[str]]:
        """``(queue names, dequeue KEYS, task-key prefixes)`` for one dequeue call."""
        if self._fixed is not None:
            return self._fixed
        return self._build(self.order())
