#!lua flags=allow-oom
-- archive: tasks of one queue go to the archived zset: retries exhausted, SkipRetry,
-- or a message that cannot be decoded (Asynq's archive, batched). Recoverers use it
-- with a lease cutoff instead of tokens.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:archived
-- KEYS[4] processed:<date>   KEYS[5] failed:<date>   KEYS[6] processed   KEYS[7] failed
-- ARGV[1] daily-stats expire-at   ARGV[2] asynq:{q}:t:   ARGV[3] lease cutoff or ""
-- ARGV[4] now Unix s   ARGV[5] cutoff Unix s (now - 90 days)   ARGV[6] max archive size (10000)
-- ARGV[7..] triples (task id, lease token, TaskMessage with error_msg/last_failed_at)
-- Archived tasks older than the cutoff, and all but the newest (size - 1), are deleted
-- with their hashes, as Asynq v0.25+ does. Publishes the settled IDs on asynq:{q}:fastq_done
-- ("archived"). Returns the IDs that were not settled.
local missing = {}
local settled = {}
local scored = {}
local taken = {}
local count = 0
for i = 7, #ARGV, 3 do
    local id = ARGV[i]
    local key = ARGV[2] .. id
    if fastq_unlist(KEYS[1], KEYS[2], id, key, ARGV[i + 1], ARGV[3], taken) then
        redis.call("HSET", key, "msg", ARGV[i + 2], "state", "archived")
        redis.call("HDEL", key, "lease_token")
        count = count + 1
        settled[count] = id
        scored[2 * count - 1] = ARGV[4]
        scored[2 * count] = id
    else
        missing[#missing + 1] = id
    end
end
if count > 0 then
    fastq_unlease(KEYS[2], settled)
    fastq_bulk("ZADD", KEYS[3], scored)
    fastq_trim_archive(KEYS[3], ARGV[2], ARGV[5], ARGV[6])
    fastq_incr_daily(KEYS[4], count, ARGV[1])
    fastq_incr_daily(KEYS[5], count, ARGV[1])
    fastq_incr_total(KEYS[6], count)
    fastq_incr_total(KEYS[7], count)
end
fastq_settled(KEYS[1], "archived", settled)
return missing
