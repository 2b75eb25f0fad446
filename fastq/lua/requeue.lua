-- requeue: unfinished active tasks of one queue go back to pending at the dequeue
-- end (shutdown). No counters change and pending_since is not set, as in Asynq.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:pending
-- ARGV[1] asynq:{q}:t:   ARGV[2..] task ids
-- Returns the IDs that were not active.
local missing = {}
for i = 2, #ARGV do
    local id = ARGV[i]
    if fastq_release(KEYS[1], KEYS[2], id) then
        redis.call("RPUSH", KEYS[3], id)
        redis.call("HSET", ARGV[1] .. id, "state", "pending")
    else
        missing[#missing + 1] = id
    end
end
return missing
