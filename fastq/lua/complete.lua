-- complete: acknowledge successful tasks of one queue that have retention > 0: they
-- move to the completed zset (Asynq's markAsComplete / markAsCompleteUnique, batched).
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:completed
-- KEYS[4] asynq:{q}:processed:<YYYY-MM-DD>   KEYS[5] asynq:{q}:processed
-- ARGV[1] daily-stats expire-at   ARGV[2] asynq:{q}:t:
-- ARGV[3..] 4-tuples (task id, expiry Unix s = completed_at + retention, TaskMessage with completed_at, unique key or "")
-- Returns the IDs that were not active.
local missing = {}
local count = 0
for i = 3, #ARGV, 4 do
    local id = ARGV[i]
    if fastq_release(KEYS[1], KEYS[2], id) then
        redis.call("ZADD", KEYS[3], ARGV[i + 1], id)
        redis.call("HSET", ARGV[2] .. id, "msg", ARGV[i + 2], "state", "completed")
        fastq_unlock(ARGV[i + 3], id)
        count = count + 1
    else
        missing[#missing + 1] = id
    end
end
if count > 0 then
    fastq_incr_daily(KEYS[4], count, ARGV[1])
    fastq_incr_total(KEYS[5], count)
end
return missing
