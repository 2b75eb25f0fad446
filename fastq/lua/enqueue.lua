-- enqueue: one task to pending (Asynq's enqueue, same effects).
-- KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:pending
-- ARGV[1] TaskMessage bytes  ARGV[2] task id  ARGV[3] now in Unix nanoseconds
-- Returns 1 when written, 0 when the ID already exists (ID conflict).
if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
local was_empty = redis.call("LLEN", KEYS[2]) == 0
redis.call("LPUSH", KEYS[2], ARGV[2])
fastq_notify(KEYS[2], was_empty)
return 1
