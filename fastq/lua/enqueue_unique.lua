-- enqueue_unique: one task to pending, guarded by a uniqueness lock (Asynq's enqueueUnique).
-- KEYS[1] unique key   KEYS[2] asynq:{q}:t:<id>   KEYS[3] asynq:{q}:pending
-- ARGV[1] task id   ARGV[2] lock TTL in seconds   ARGV[3] TaskMessage bytes   ARGV[4] now in Unix ns
-- Returns 1 written, -1 duplicate (lock held), 0 ID conflict.
-- Unlike Go, a lock taken for a task whose ID conflicts is released again.
local ok = redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2])
if not ok then
    return -1
end
if redis.call("EXISTS", KEYS[2]) == 1 then
    redis.call("DEL", KEYS[1])
    return 0
end
redis.call("HSET", KEYS[2], "msg", ARGV[3], "state", "pending", "pending_since", ARGV[4], "unique_key", KEYS[1])
local was_empty = redis.call("LLEN", KEYS[3]) == 0
redis.call("LPUSH", KEYS[3], ARGV[1])
fastq_notify(KEYS[3], was_empty)
return 1
