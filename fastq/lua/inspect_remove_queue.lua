-- inspect_remove_queue: delete a queue's containers (Asynq's removeQueue / removeQueueForce).
-- KEYS[1] pending  KEYS[2] active  KEYS[3] scheduled  KEYS[4] retry  KEYS[5] archived
-- KEYS[6] lease
-- ARGV[1] asynq:{q}:t:   ARGV[2] "1" = force   ARGV[3] batch size
-- Without force: -1 if any container holds a task, else all six keys are deleted.
-- With force: -2 if a task is active; else up to ARGV[3] tasks per container are popped and
-- their hashes deleted; once all are empty the keys are deleted. The caller repeats while
-- this returns 0, so a big queue never blocks Redis in one script.
-- As in Asynq, completed tasks, groups, counters and the paused flag are left alone, and
-- the caller removes the name from asynq:queues (another cluster slot).
-- Returns 1 removed, 0 more batches to go, -1 not empty, -2 has active tasks.
if redis.call("LLEN", KEYS[2]) > 0 then
    return -2
end
local function left()
    return redis.call("LLEN", KEYS[1]) + redis.call("ZCARD", KEYS[3]) + redis.call("ZCARD", KEYS[4])
        + redis.call("ZCARD", KEYS[5])
end
if ARGV[2] ~= "1" then
    if left() > 0 then
        return -1
    end
else
    local n = tonumber(ARGV[3])
    for _, id in ipairs(redis.call("RPOP", KEYS[1], n) or {}) do
        redis.call("DEL", ARGV[1] .. id)
    end
    for i = 3, 5 do
        local popped = redis.call("ZPOPMIN", KEYS[i], n)
        for j = 1, #popped, 2 do
            redis.call("DEL", ARGV[1] .. popped[j])
        end
    end
    if left() > 0 then
        return 0
    end
end
redis.call("DEL", KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return 1
