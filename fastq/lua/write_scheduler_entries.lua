-- write_scheduler_entries: one heartbeat of a Scheduler (Asynq's writeSchedulerEntries).
-- KEYS[1] asynq:schedulers:{<schedulerID>}   KEYS[2] asynq:schedulers
-- ARGV[1] TTL seconds   ARGV[2] expiry Unix seconds (now + TTL, the score in KEYS[2])
-- ARGV[3..] SchedulerEntry bytes, one per registered entry
-- Go does the ZADD just before its script; here both happen atomically. The list is
-- rebuilt with LPUSH, so it holds the entries in reverse order, as Go's does.
-- Returns the number of entries written.
redis.call("ZADD", KEYS[2], ARGV[2], KEYS[1])
redis.call("DEL", KEYS[1])
for i = 3, #ARGV do
    redis.call("LPUSH", KEYS[1], ARGV[i])
end
redis.call("EXPIRE", KEYS[1], ARGV[1])
return #ARGV - 2
