-- inspect_list: one page of a list container (pending or active) with each task's message
-- and result (Asynq's listMessages). The caller passes Asynq's negative offsets and reverses
-- the page, so pages run oldest first.
-- KEYS[1] asynq:{q}:pending or asynq:{q}:active   KEYS[2] asynq:{q}:lease
-- ARGV[1] start   ARGV[2] stop   ARGV[3] asynq:{q}:t:   ARGV[4] "1" to add each lease score
-- Returns {Redis time (Unix s), id1, msg1, result1, lease1, id2, ...}; a missing msg, result
-- or lease is nil.
local res = {tonumber(redis.call("TIME")[1])}
for _, id in ipairs(redis.call("LRANGE", KEYS[1], ARGV[1], ARGV[2])) do
    local msg, result = unpack(redis.call("HMGET", ARGV[3] .. id, "msg", "result"))
    local lease = false
    if ARGV[4] == "1" then
        lease = redis.call("ZSCORE", KEYS[2], id)
    end
    res[#res + 1] = id
    res[#res + 1] = msg
    res[#res + 1] = result
    res[#res + 1] = lease
end
return res
