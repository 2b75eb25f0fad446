"""Recover the tasks of a worker process that died, without waiting for their leases.

The supervisor knows the server id of each child (it chose it before forking), and
every claim's lease token starts with that id. When a child dies, its claims are
settled at once as failed attempts (retry, or archive when retries are used up) with
an error naming the lost worker. The settling scripts check each token, so a task
already settled by anyone else is left alone. Uses a short-lived synchronous client:
the supervisor keeps no connection open across forks.
"""
from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from fastq import keys
from fastq._rdb.outcome import Outcome
from fastq._rdb.worker import SyncBroker
from fastq.redis.facade import sync_client
from fastq.server.config import WorkerConfig
from fastq.server.recoverer import lost_claim

log = logging.getLogger("fastq.supervisor")


def recover_worker(cfg: WorkerConfig, server_id: str, pid: int, reason: str) -> int:
    """Settle every claim of the dead worker ``server_id``; return how many were settled."""
    client = sync_client(cfg.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        broker = SyncBroker(client)
        now = time.time()
        why = f"worker {pid} lost ({reason})"
        outcomes: list[Outcome] = []
        for claim in broker.list_claims(cfg.queues, server_id):
            outcome = lost_claim(claim, why, now, cfg)
            if outcome is not None:  # always: nothing is held here
                outcomes.append(outcome)
        settled = len(outcomes) - len(broker.settle(outcomes, now)) if outcomes else 0
        broker.clear_server_state(keys.server_info_key(cfg.host, pid, server_id),
                                  keys.workers_key(cfg.host, pid, server_id))
        if settled:
            log.warning("recovered %d task(s) of dead worker %d at once", settled, pid)
        return settled
    except (RedisError, OSError) as exc:
        log.warning("could not recover the tasks of dead worker %d now (%s); lease recovery will", pid, exc)
        return 0
    finally:
        client.close()
