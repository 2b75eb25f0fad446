#!lua flags=allow-oom
-- reclaim_aggregation_sets: aggregation sets whose deadline passed by the Redis clock (the
-- worker that made them died or hung) go back to their groups (Asynq's
-- reclaimStaleAggregationSets, batched: the caller loops while a batch is full).
-- KEYS[1] asynq:{q}:aggregation_sets   KEYS[2] asynq:{q}:groups
-- ARGV[1] asynq:{q}:g:   ARGV[2] asynq:{q}:t:   ARGV[3] max sets per call
-- Each member returns to asynq:{q}:g:<group> with its original score, unless its task hash is
-- gone or no longer "aggregating". Unlike Go, the group name is added back to KEYS[2], so the
-- group is aggregated again (Go leaves it out until another task joins the group).
-- The group keys are derived from the set key names (not known before the call).
-- Returns the number of sets reclaimed.
local sets = redis.call("ZRANGE", KEYS[1], "-inf", fastq_now(), "BYSCORE", "LIMIT", 0, tonumber(ARGV[3]))
local prefix = ARGV[1]
for _, set_key in ipairs(sets) do
    local group_key = string.match(set_key, "^(.*):[^:]*$")
    if group_key and string.sub(group_key, 1, #prefix) == prefix and #group_key > #prefix then
        local members = redis.call("ZRANGE", set_key, 0, -1, "WITHSCORES")
        local items = {}
        for i = 1, #members, 2 do
            if redis.call("HGET", ARGV[2] .. members[i], "state") == "aggregating" then
                items[#items + 1] = members[i + 1]
                items[#items + 1] = members[i]
            end
        end
        if #items > 0 then
            fastq_bulk("ZADD", group_key, items)
            redis.call("SADD", KEYS[2], string.sub(group_key, #prefix + 1))
        end
    end
    redis.call("DEL", set_key)
    redis.call("ZREM", KEYS[1], set_key)
end
return #sets
