#!lua flags=allow-oom
-- janitor: delete completed tasks of one queue whose retention ended, by Redis time
-- (Asynq's deleteExpiredCompletedTasks; batched, the caller loops while a batch is full).
-- KEYS[1] asynq:{q}:completed   ARGV[1] asynq:{q}:t:   ARGV[2] batch size
-- Returns the number of tasks deleted.
local ids = redis.call("ZRANGE", KEYS[1], "-inf", fastq_now(), "BYSCORE", "LIMIT", 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
    redis.call("DEL", ARGV[1] .. id)
end
fastq_bulk("ZREM", KEYS[1], ids)
return #ids
