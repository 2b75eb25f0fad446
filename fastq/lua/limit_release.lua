#!lua flags=allow-oom
-- limit_release: free the concurrency slots of settled tasks of one queue (sent in the same
-- round trip as their outcomes, after them), and wake one waiting task per freed slot.
-- KEYS[1] asynq:{q}:scheduled   KEYS[2] asynq:{q}:pending
-- KEYS[3..] the slots and waiters zsets the tuples point at (asynq:{q}:fastq_slots:..., fastq_wait:...)
-- ARGV[1] asynq:{q}:t:   ARGV[2..] 4-tuples (task id, lease token of the run that held the slot,
--         index in KEYS of the slots key, index of the waiters key or 0)
-- Fencing: a slot is freed only if the task hash carries no lease token or this one; a task
-- claimed again meanwhile (another token) keeps its slot. A freed slot moves the oldest waiter
-- still in scheduled to pending (state pending, pending_since), as the forwarder would.
-- Returns the number of slots freed.
local freed = 0
local woken = 0
local was_empty = redis.call("LLEN", KEYS[2]) == 0
local now_ns = nil
for i = 2, #ARGV, 4 do
    local id = ARGV[i]
    local current = redis.call("HGET", ARGV[1] .. id, "lease_token")
    if (not current or current == ARGV[i + 1]) and redis.call("ZREM", KEYS[tonumber(ARGV[i + 2])], id) == 1 then
        freed = freed + 1
        local wk = tonumber(ARGV[i + 3])
        if wk > 0 then
            for _ = 1, 10 do
                local popped = redis.call("ZPOPMIN", KEYS[wk], 1)
                if #popped == 0 then
                    break
                end
                local waiter = popped[1]
                if redis.call("ZREM", KEYS[1], waiter) == 1 then
                    now_ns = now_ns or fastq_now_ns()
                    redis.call("LPUSH", KEYS[2], waiter)
                    redis.call("HSET", ARGV[1] .. waiter, "state", "pending", "pending_since", now_ns)
                    woken = woken + 1
                    break
                end
            end
        end
    end
end
if woken > 0 then
    fastq_notify(KEYS[2], was_empty)
end
return freed
