#!lua flags=allow-oom
-- requeue: unfinished active tasks of one queue go back to pending at the dequeue
-- end (shutdown). No counters change and pending_since is not set, as in Asynq.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:pending
-- ARGV[1] asynq:{q}:t:   ARGV[2] lease cutoff or ""   ARGV[3..] pairs (task id, lease token)
-- Returns the IDs that were not settled.
local missing = {}
local released = {}
local taken = {}
local was_empty = redis.call("LLEN", KEYS[3]) == 0
for i = 3, #ARGV, 2 do
    local id = ARGV[i]
    local key = ARGV[1] .. id
    if fastq_unlist(KEYS[1], KEYS[2], id, key, ARGV[i + 1], ARGV[2], taken) then
        redis.call("HSET", key, "state", "pending")
        redis.call("HDEL", key, "lease_token")
        released[#released + 1] = id
    else
        missing[#missing + 1] = id
    end
end
fastq_unlease(KEYS[2], released)
fastq_bulk("RPUSH", KEYS[3], released)
fastq_notify(KEYS[3], was_empty)
return missing
