-- done: acknowledge successful tasks of one queue that have no retention: the task
-- hash is deleted (Asynq's done / doneUnique, batched).
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease
-- KEYS[3] asynq:{q}:processed:<YYYY-MM-DD>   KEYS[4] asynq:{q}:processed
-- ARGV[1] daily-stats expire-at (Unix s)   ARGV[2] asynq:{q}:t:
-- ARGV[3..] pairs (task id, unique key or "")
-- IDs no longer active (reclaimed or requeued meanwhile) are left alone.
-- Returns the IDs that were not active.
local missing = {}
local count = 0
for i = 3, #ARGV, 2 do
    local id = ARGV[i]
    if fastq_release(KEYS[1], KEYS[2], id) then
        redis.call("DEL", ARGV[2] .. id)
        fastq_unlock(ARGV[i + 1], id)
        count = count + 1
    else
        missing[#missing + 1] = id
    end
end
if count > 0 then
    fastq_incr_daily(KEYS[3], count, ARGV[1])
    fastq_incr_total(KEYS[4], count)
end
return missing
