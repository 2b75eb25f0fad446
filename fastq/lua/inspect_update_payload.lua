-- inspect_update_payload: replace the message of a scheduled task (Asynq's
-- updateTaskPayload, v0.26), only if the message is still the one the caller read.
-- KEYS[1] asynq:{q}:t:<id>
-- ARGV[1] new TaskMessage bytes   ARGV[2] the TaskMessage bytes the caller read
-- Returns {1} updated, {0} no such task, {-1, state} not scheduled, {-2} the message changed
-- meanwhile (read again and retry).
if redis.call("EXISTS", KEYS[1]) == 0 then
    return {0}
end
local state, msg = unpack(redis.call("HMGET", KEYS[1], "state", "msg"))
if state ~= "scheduled" then
    return {-1, state or ""}
end
if msg ~= ARGV[2] then
    return {-2}
end
redis.call("HSET", KEYS[1], "msg", ARGV[1])
return {1}
