#!lua flags=allow-oom
-- done: acknowledge successful tasks of one queue that have no retention: the task
-- hash is deleted (Asynq's done / doneUnique, batched: one ZREM of the leases and one DEL of
-- the hashes per 500 tasks). Allowed when Redis is out of memory (it frees memory), so a
-- full Redis still drains.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease
-- KEYS[3] asynq:{q}:processed:<YYYY-MM-DD>   KEYS[4] asynq:{q}:processed
-- ARGV[1] daily-stats expire-at (Unix s)   ARGV[2] asynq:{q}:t:   ARGV[3] lease cutoff or ""
-- ARGV[4..] groups (lease token or "", unique key or "", n, n task IDs): the tasks of a group
--          share token and unique key (the tasks of one dequeue: one token, usually no key),
--          so a batch costs one argument per task
-- Tasks no longer active under that token (reclaimed, requeued) are left alone.
-- Publishes the settled IDs on asynq:{q}:fastq_done ("done"). Returns the IDs that were not settled.
local missing = {}
local settled = {}
local hashes = {}
local taken = {}
local count = 0
local i = 4
while i <= #ARGV do
    local token, unique = ARGV[i], ARGV[i + 1]
    local last = i + 2 + tonumber(ARGV[i + 2])
    for j = i + 3, last do
        local id = ARGV[j]
        local key = ARGV[2] .. id
        if fastq_unlist(KEYS[1], KEYS[2], id, key, token, ARGV[3], taken) then
            fastq_unlock(unique, id)
            count = count + 1
            settled[count] = id
            hashes[count] = key
        else
            missing[#missing + 1] = id
        end
    end
    i = last + 1
end
if count > 0 then
    fastq_unlease(KEYS[2], settled)
    for k = 1, count, 500 do
        redis.call("DEL", unpack(hashes, k, math.min(k + 499, count)))
    end
    fastq_incr_daily(KEYS[3], count, ARGV[1])
    fastq_incr_total(KEYS[4], count)
end
fastq_settled(KEYS[1], "done", settled)
return missing
