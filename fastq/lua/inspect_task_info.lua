-- inspect_task_info: one task's message, state, next process time and result
-- (Asynq's getTaskInfo, returning 0 instead of a "NOT FOUND" error).
-- KEYS[1] asynq:{q}:t:<id>
-- ARGV[1] task id   ARGV[2] asynq:{q}:
-- Returns 0 when the hash does not exist, else {msg, state, score, result}: score is the
-- ZSCORE in scheduled/retry for those states, nil otherwise; missing fields are nil.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end
local msg, state, result = unpack(redis.call("HMGET", KEYS[1], "msg", "state", "result"))
local score = false
if state == "scheduled" or state == "retry" then
    score = redis.call("ZSCORE", ARGV[2] .. state, ARGV[1])
end
return {msg, state, score, result}
