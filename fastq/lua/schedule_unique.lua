-- schedule_unique: one task to the scheduled zset, guarded by a uniqueness lock.
-- KEYS[1] unique key   KEYS[2] asynq:{q}:t:<id>   KEYS[3] asynq:{q}:scheduled
-- ARGV[1] task id   ARGV[2] lock TTL seconds   ARGV[3] process-at Unix seconds (or "+<seconds>" from Redis time)   ARGV[4] TaskMessage bytes
-- Returns 1 written, -1 duplicate, 0 ID conflict (the lock is released again).
local ok = redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2])
if not ok then
    return -1
end
if redis.call("EXISTS", KEYS[2]) == 1 then
    redis.call("DEL", KEYS[1])
    return 0
end
redis.call("HSET", KEYS[2], "msg", ARGV[4], "state", "scheduled", "unique_key", KEYS[1])
redis.call("ZADD", KEYS[3], fastq_score(ARGV[3]), ARGV[1])
return 1
