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

from fastq import _scripts, keys
from fastq._rdb.calls import execute
from fastq._redis import sync_client
from fastq.server.broker import Broker, group_by
from fastq.server.config import WorkerConfig
from fastq.server.maintenance import lost_claim

log = logging.getLogger("fastq.supervisor")


def recover_worker(cfg: WorkerConfig, server_id: str, pid: int, reason: str) -> int:
    """Settle every claim of the dead worker ``server_id``; return how many were settled."""
    client = sync_client(cfg.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        now = time.time()
        items = []
        for q in cfg.queues:
            reply = _scripts.LIST_CLAIMS.run(client, [keys.lease_key(q)], [keys.task_key_prefix(q), f"{server_id}:"])
            for i in range(0, len(reply), 3):
                # the token matched "<server id>:" in the script: ours, ASCII; the ID and message may be anything
                token = reply[i + 1].decode("utf-8", "backslashreplace")
                items.append(lost_claim(q, reply[i], reply[i + 2], f"worker {pid} lost ({reason})", now, cfg, token))
        settled = 0
        if items:
            replies = execute(client, Broker.ack_calls(group_by(items), now))
            settled = len(items) - sum(len(r) for r in replies)
        client.zrem(keys.ALL_SERVERS, keys.server_info_key(cfg.host, pid, server_id))
        client.zrem(keys.ALL_WORKERS, keys.workers_key(cfg.host, pid, server_id))
        client.delete(keys.server_info_key(cfg.host, pid, server_id), keys.workers_key(cfg.host, pid, server_id))
        if settled:
            log.warning("recovered %d task(s) of dead worker %d at once", settled, pid)
        return settled
    except (RedisError, OSError) as exc:
        log.warning("could not recover the tasks of dead worker %d now (%s); lease recovery will", pid, exc)
        return 0
    finally:
        client.close()

