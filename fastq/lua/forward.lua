-- forward: due tasks of one queue move from scheduled or retry to pending (or back to
-- their aggregation group when the hash has a "group" field), as Asynq's forward.
-- KEYS[1] asynq:{q}:scheduled or asynq:{q}:retry   KEYS[2] asynq:{q}:pending   KEYS[3] asynq:{q}:groups
-- ARGV[1] asynq:{q}:t:   ARGV[2] asynq:{q}:g:   ARGV[3] max tasks per call
-- ARGV[4] optional: "1" compares scores with the Redis time to the microsecond instead of whole
--         seconds (the limits forwarder of fastq.server.limits: rate-limited tasks wait with
--         fractional scores)
-- "Due" is judged by the Redis server clock, so skewed worker clocks neither forward early
-- nor late. All task hashes are read before anything is written, so a hash this node no
-- longer holds (cluster slot migration) fails the call without a half-done move.
-- Returns the number of tasks moved.
local now = fastq_now()
local now_ns = fastq_now_ns()
local upto = now
if ARGV[4] == "1" then
    upto = tonumber(string.sub(now_ns, 1, -10) .. "." .. string.sub(now_ns, -9, -4))
end
local ids = redis.call("ZRANGE", KEYS[1], "-inf", upto, "BYSCORE", "LIMIT", 0, tonumber(ARGV[3]))
local groups = {}
for i, id in ipairs(ids) do
    groups[i] = redis.call("HGET", ARGV[1] .. id, "group")
end
local was_empty = redis.call("LLEN", KEYS[2]) == 0
for i, id in ipairs(ids) do
    local key = ARGV[1] .. id
    local group = groups[i]
    if group and group ~= "" then
        redis.call("ZADD", ARGV[2] .. group, now, id)
        redis.call("HSET", key, "state", "aggregating")
        redis.call("SADD", KEYS[3], group) -- Go forgets this, leaving the group unseen by aggregators
    else
        redis.call("LPUSH", KEYS[2], id)
        redis.call("HSET", key, "state", "pending", "pending_since", now_ns)
    end
end
fastq_bulk("ZREM", KEYS[1], ids)
fastq_notify(KEYS[2], was_empty)
return #ids
