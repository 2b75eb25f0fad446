-- enqueue_batch: many tasks of one queue to pending in one call.
-- KEYS[1] asynq:{q}:pending   KEYS[1+i] asynq:{q}:t:<id i>   (i = 1..n)
-- ARGV[1] now in Unix nanoseconds   ARGV[2i] id i   ARGV[2i+1] TaskMessage bytes of task i
-- Tasks whose ID already exists are skipped. Returns the 1-based indexes of the skipped tasks.
local conflicts = {}
local ids = {}
for i = 1, #KEYS - 1 do
    local key = KEYS[i + 1]
    if redis.call("EXISTS", key) == 1 then
        conflicts[#conflicts + 1] = i
    else
        local id = ARGV[2 * i]
        redis.call("HSET", key, "msg", ARGV[2 * i + 1], "state", "pending", "pending_since", ARGV[1])
        ids[#ids + 1] = id
    end
end
local was_empty = redis.call("LLEN", KEYS[1]) == 0
fastq_bulk("LPUSH", KEYS[1], ids)
fastq_notify(KEYS[1], was_empty)
return conflicts
