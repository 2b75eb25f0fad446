#!lua flags=allow-oom
-- complete: acknowledge successful tasks of one queue that have retention > 0: they
-- move to the completed zset (Asynq's markAsComplete / markAsCompleteUnique, batched).
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:completed
-- KEYS[4] asynq:{q}:processed:<YYYY-MM-DD>   KEYS[5] asynq:{q}:processed
-- ARGV[1] daily-stats expire-at   ARGV[2] asynq:{q}:t:   ARGV[3] lease cutoff or ""
-- ARGV[4..] 6-tuples (task id, lease token, expiry Unix s = completed_at + retention,
--                     TaskMessage with completed_at, unique key or "",
--                     "" or "1" followed by the handler's result bytes for the "result" field)
-- Publishes the settled IDs on asynq:{q}:fastq_done ("completed"). Returns the IDs that were not settled.
local missing = {}
local settled = {}
local scored = {}
local taken = {}
local count = 0
for i = 4, #ARGV, 6 do
    local id = ARGV[i]
    local key = ARGV[2] .. id
    if fastq_unlist(KEYS[1], KEYS[2], id, key, ARGV[i + 1], ARGV[3], taken) then
        if ARGV[i + 5] ~= "" then
            redis.call("HSET", key, "msg", ARGV[i + 3], "state", "completed", "result", string.sub(ARGV[i + 5], 2))
        else
            redis.call("HSET", key, "msg", ARGV[i + 3], "state", "completed")
        end
        redis.call("HDEL", key, "lease_token")
        fastq_unlock(ARGV[i + 4], id)
        count = count + 1
        settled[count] = id
        scored[2 * count - 1] = ARGV[i + 2]
        scored[2 * count] = id
    else
        missing[#missing + 1] = id
    end
end
if count > 0 then
    fastq_unlease(KEYS[2], settled)
    fastq_bulk("ZADD", KEYS[3], scored)
    fastq_incr_daily(KEYS[4], count, ARGV[1])
    fastq_incr_total(KEYS[5], count)
end
fastq_settled(KEYS[1], "completed", settled)
return missing
