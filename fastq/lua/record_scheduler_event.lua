-- record_scheduler_event: remember that an entry enqueued a task (Asynq's recordSchedulerEnqueueEvent).
-- KEYS[1] asynq:scheduler_history:<entryID>
-- ARGV[1] enqueue time, Unix seconds (the score)   ARGV[2] SchedulerEnqueueEvent bytes
-- ARGV[3] most events kept (Asynq: 1000)
-- Trims to the newest ARGV[3] - 1 events, then adds the new one.
-- Returns OK.
redis.call("ZREMRANGEBYRANK", KEYS[1], 0, -tonumber(ARGV[3]))
redis.call("ZADD", KEYS[1], ARGV[1], ARGV[2])
return redis.status_reply("OK")
