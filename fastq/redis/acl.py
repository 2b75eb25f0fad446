"""Least-privilege ACL rule sets for workers, producers and read-only users (Redis >= 7)."""
from __future__ import annotations

# ---------------------------------------------------------------- least-privilege ACL users (Redis >= 7)

# ``ACL SETUSER <name> on >PASSWORD`` followed by one of these (README, "Redis Cluster, Sentinel,
# TLS and ACLs"; tests/test_connection.py runs each role under its user). Redis 7 checks the keys
# and channels of commands *inside* scripts, so these hold for fastq's Lua too.
ACL_WORKER = ("resetkeys ~asynq:* resetchannels &asynq:* -@all +@read +@write -@dangerous "
              "+evalsha +script|load +subscribe +unsubscribe +publish +ping +select +time +info")
ACL_PRODUCER = ("resetkeys ~asynq:* resetchannels &asynq:{*}:fastq_notify -@all "
                "+evalsha +script|load +ping +select +time +exists +llen +sadd +hset +lpush +zadd +publish "
                "(~asynq:{*}:unique:* +set +del)")
ACL_READONLY = ("resetkeys ~asynq:* resetchannels -@all +@read -@dangerous "
                "+evalsha +script|load +ping +select +time +info")
