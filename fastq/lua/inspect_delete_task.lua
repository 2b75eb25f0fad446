-- inspect_delete_task: delete one task that is not active (Asynq's deleteTask).
-- KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:groups
-- ARGV[1] task id   ARGV[2] asynq:{q}:   ARGV[3] asynq:{q}:g:
-- Removes the ID from its container (LREM for pending; the group zset for aggregating,
-- dropping an emptied group from KEYS[2]; else the zset named by the state), frees the
-- uniqueness lock if this task holds it, and deletes the hash.
-- Unlike Asynq, a hash whose container misses the ID, or whose state is unknown (an
-- orphan result hash, #1167), is still deleted instead of failing.
-- Returns 1 deleted, 0 no such task, -1 the task is active.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end
local state, group, unique_key = unpack(redis.call("HMGET", KEYS[1], "state", "group", "unique_key"))
if state == "active" then
    return -1
end
if state == "pending" then
    redis.call("LREM", ARGV[2] .. "pending", 0, ARGV[1])
elseif state == "aggregating" then
    if group then
        redis.call("ZREM", ARGV[3] .. group, ARGV[1])
        if redis.call("ZCARD", ARGV[3] .. group) == 0 then
            redis.call("SREM", KEYS[2], group)
        end
    end
elseif state == "scheduled" or state == "retry" or state == "archived" or state == "completed" then
    redis.call("ZREM", ARGV[2] .. state, ARGV[1])
end
fastq_unlock(unique_key or "", ARGV[1])
redis.call("DEL", KEYS[1])
return 1
