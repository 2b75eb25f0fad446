-- inspect_archive_task: archive one pending, scheduled, retry or aggregating task
-- (Asynq's archiveTask).
-- KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:archived   KEYS[3] asynq:{q}:groups
-- ARGV[1] task id   ARGV[2] now Unix s   ARGV[3] cutoff Unix s (now - 90 days)
-- ARGV[4] max archive size (10000)   ARGV[5] asynq:{q}:   ARGV[6] asynq:{q}:g:
-- ARGV[7] asynq:{q}:t:
-- Then trims the archive like Asynq (older than the cutoff, beyond the size) but, unlike
-- Asynq's inspector, deletes the trimmed tasks' hashes too, at most 1000 per call each.
-- Returns 1 archived, 0 no such task, -1 already archived, -2 active, -3 unknown state.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end
local state, group = unpack(redis.call("HMGET", KEYS[1], "state", "group"))
if state == "active" then
    return -2
elseif state == "archived" then
    return -1
elseif state == "pending" then
    redis.call("LREM", ARGV[5] .. "pending", 1, ARGV[1])
elseif state == "aggregating" then
    if group then
        redis.call("ZREM", ARGV[6] .. group, ARGV[1])
        if redis.call("ZCARD", ARGV[6] .. group) == 0 then
            redis.call("SREM", KEYS[3], group)
        end
    end
elseif state == "scheduled" or state == "retry" or state == "completed" then
    redis.call("ZREM", ARGV[5] .. state, ARGV[1])
else
    return -3
end
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[1])
redis.call("HSET", KEYS[1], "state", "archived")
local function drop(ids)
    for _, id in ipairs(ids) do
        redis.call("DEL", ARGV[7] .. id)
        redis.call("ZREM", KEYS[2], id)
    end
end
drop(redis.call("ZRANGE", KEYS[2], "-inf", ARGV[3], "BYSCORE", "LIMIT", 0, 1000))
local excess = redis.call("ZCARD", KEYS[2]) - tonumber(ARGV[4]) + 1
if excess > 0 then
    drop(redis.call("ZRANGE", KEYS[2], 0, math.min(excess, 1000) - 1))
end
return 1
