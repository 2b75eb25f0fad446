-- write_scheduler_entries: one heartbeat of a Scheduler (Asynq's writeSchedulerEntries).
-- KEYS[1] asynq:schedulers:{<schedulerID>}
-- ARGV[1] TTL seconds   ARGV[2..] SchedulerEntry bytes, one per registered entry
-- As in Go, the caller ZADDs KEYS[1] to asynq:schedulers (score now + TTL) as a separate command:
-- the two keys are in different Redis Cluster slots. The list is rebuilt with LPUSH, so it holds
-- the entries in reverse order, as Go's does. Returns the number of entries written.
redis.call("DEL", KEYS[1])
for i = 2, #ARGV do
    redis.call("LPUSH", KEYS[1], ARGV[i])
end
redis.call("EXPIRE", KEYS[1], ARGV[1])
return #ARGV - 1
