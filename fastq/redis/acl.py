"""Least-privilege ACL rule sets for workers, producers and read-only users (Redis >= 7)."""
from __future__ import annotations

from fastq.keys import ANY_KEY, notify_channel, unique_key_prefix

# ---------------------------------------------------------------- least-privilege ACL users (Redis >= 7)

# ``ACL SETUSER <name> on >PASSWORD`` followed by one of these (README, "Redis Cluster, Sentinel,
# TLS and ACLs"; tests/test_connection.py runs each role under its user). Redis 7 checks the keys
# and channels of commands *inside* scripts, so these hold for fastq's Lua too.
ACL_WORKER = (f"resetkeys ~{ANY_KEY} resetchannels &{ANY_KEY} -@all +@read +@write -@dangerous "
              "+evalsha +script|load +script|exists +subscribe +unsubscribe +publish +ping +select +time +info")
ACL_PRODUCER = (f"resetkeys ~{ANY_KEY} resetchannels &{notify_channel('*')} -@all "
                "+evalsha +script|load +ping +select +time +exists +llen +sadd +hset +lpush +zadd +publish "
                f"(~{unique_key_prefix('*')}* +set +del)")
ACL_READONLY = (f"resetkeys ~{ANY_KEY} resetchannels -@all +@read -@dangerous "
                "+evalsha +script|load +ping +select +time +info")
