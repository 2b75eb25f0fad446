#!lua flags=allow-oom
-- retry: failed tasks of one queue go to the retry zset (Asynq's retry, batched).
-- Also used by recoverers, with a lease cutoff instead of tokens.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:retry
-- KEYS[4] processed:<date>   KEYS[5] failed:<date>   KEYS[6] processed   KEYS[7] failed
-- ARGV[1] daily-stats expire-at   ARGV[2] asynq:{q}:t:   ARGV[3] lease cutoff or ""
-- ARGV[4..] 5-tuples (task id, lease token, TaskMessage with retried/error_msg/last_failed_at,
--                     retry-at Unix s, "1" if the failure counts in the stats else "0")
-- The uniqueness lock is kept, as in Asynq. Returns the IDs that were not settled.
local missing = {}
local released = {}
local scored = {}
local taken = {}
local count = 0
local failures = 0
for i = 4, #ARGV, 5 do
    local id = ARGV[i]
    local key = ARGV[2] .. id
    if fastq_unlist(KEYS[1], KEYS[2], id, key, ARGV[i + 1], ARGV[3], taken) then
        redis.call("HSET", key, "msg", ARGV[i + 2], "state", "retry")
        redis.call("HDEL", key, "lease_token")
        count = count + 1
        released[count] = id
        scored[2 * count - 1] = ARGV[i + 3]
        scored[2 * count] = id
        if ARGV[i + 4] == "1" then
            failures = failures + 1
        end
    else
        missing[#missing + 1] = id
    end
end
if count > 0 then
    fastq_unlease(KEYS[2], released)
    fastq_bulk("ZADD", KEYS[3], scored)
end
if failures > 0 then
    fastq_incr_daily(KEYS[4], failures, ARGV[1])
    fastq_incr_daily(KEYS[5], failures, ARGV[1])
    fastq_incr_total(KEYS[6], failures)
    fastq_incr_total(KEYS[7], failures)
end
return missing
