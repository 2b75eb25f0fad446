-- schedule: one task to the scheduled zset (Asynq's schedule).
-- KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:scheduled
-- ARGV[1] TaskMessage bytes   ARGV[2] process-at Unix seconds (or "+<seconds>" from Redis time)   ARGV[3] task id
-- Returns 1 written, 0 ID conflict.
if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled")
redis.call("ZADD", KEYS[2], fastq_score(ARGV[2]), ARGV[3])
return 1
