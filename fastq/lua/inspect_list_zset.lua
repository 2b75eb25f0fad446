-- inspect_list_zset: one page of a sorted-set container (scheduled, retry, archived,
-- completed or a group), lowest score first (Asynq's listZSetEntries).
-- KEYS[1] the zset
-- ARGV[1] start rank   ARGV[2] stop rank   ARGV[3] asynq:{q}:t:
-- Returns {id1, score1, msg1, result1, id2, ...}; a missing msg or result is nil.
local res = {}
local pairs_ = redis.call("ZRANGE", KEYS[1], ARGV[1], ARGV[2], "WITHSCORES")
for i = 1, #pairs_, 2 do
    local id = pairs_[i]
    local msg, result = unpack(redis.call("HMGET", ARGV[3] .. id, "msg", "result"))
    res[#res + 1] = id
    res[#res + 1] = pairs_[i + 1]
    res[#res + 1] = msg
    res[#res + 1] = result
end
return res
