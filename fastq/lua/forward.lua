-- forward: due tasks of one queue move from scheduled or retry to pending (or back to
-- their aggregation group when the hash has a "group" field), as Asynq's forward.
-- KEYS[1] asynq:{q}:scheduled or asynq:{q}:retry   KEYS[2] asynq:{q}:pending   KEYS[3] asynq:{q}:groups
-- ARGV[1] now Unix s   ARGV[2] asynq:{q}:t:   ARGV[3] now Unix ns   ARGV[4] asynq:{q}:g:
-- ARGV[5] max tasks per call
-- Returns the number of tasks moved.
local ids = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, tonumber(ARGV[5]))
for _, id in ipairs(ids) do
    local key = ARGV[2] .. id
    local group = redis.call("HGET", key, "group")
    if group and group ~= "" then
        redis.call("ZADD", ARGV[4] .. group, ARGV[1], id)
        redis.call("HSET", key, "state", "aggregating")
        redis.call("SADD", KEYS[3], group) -- Go forgets this, leaving the group unseen by aggregators
    else
        redis.call("LPUSH", KEYS[2], id)
        redis.call("HSET", key, "state", "pending", "pending_since", ARGV[3])
    end
end
fastq_bulk("ZREM", KEYS[1], ids)
return #ids
