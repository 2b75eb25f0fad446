"""The worker side: processor, heartbeat, upkeep loops, worker process and supervisor."""
