-- inspect_run_task: move one scheduled, retry, archived, completed or aggregating task to
-- pending now (Asynq's runTask).
-- KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:pending   KEYS[3] asynq:{q}:groups
-- ARGV[1] task id   ARGV[2] asynq:{q}:   ARGV[3] asynq:{q}:g:   ARGV[4] now in Unix ns
-- Unlike Asynq, pending_since is set (so queue latency counts the task) and an ID missing
-- from its container is pushed anyway (the hash is the truth).
-- Returns 1 moved, 0 no such task, -1 active, -2 already pending, -3 unknown state.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end
local state, group = unpack(redis.call("HMGET", KEYS[1], "state", "group"))
if state == "active" then
    return -1
elseif state == "pending" then
    return -2
elseif state == "aggregating" then
    if group then
        redis.call("ZREM", ARGV[3] .. group, ARGV[1])
        if redis.call("ZCARD", ARGV[3] .. group) == 0 then
            redis.call("SREM", KEYS[3], group)
        end
    end
elseif state == "scheduled" or state == "retry" or state == "archived" or state == "completed" then
    redis.call("ZREM", ARGV[2] .. state, ARGV[1])
else
    return -3
end
redis.call("LPUSH", KEYS[2], ARGV[1])
redis.call("HSET", KEYS[1], "state", "pending", "pending_since", ARGV[4])
return 1
