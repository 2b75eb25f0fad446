-- aggregation_relist: list the groups of aggregation sets that left asynq:{q}:aggregation_sets
-- again when they still have tasks. Go's recoverer reclaims a stale set by putting its tasks back
-- into asynq:{q}:g:<group> without adding <group> to asynq:{q}:groups (only listed groups are
-- checked): the aggregator sees such a set vanish and hands it here, which costs O(1) per set
-- instead of a SCAN of the keyspace.
-- KEYS[1] asynq:{q}:groups   KEYS[2] asynq:{q}:aggregation_sets
-- ARGV[1] asynq:{q}:g:   ARGV[2..] set keys asynq:{q}:g:<group>:<setID> no longer in KEYS[2]
-- The group key is the set key without its last ":<setID>" (as reclaim_aggregation_sets finds
-- it); it is listed when it is a non-empty zset, not itself a registered set, and not listed yet.
-- Names are bytes (Lua strings); any name works.
-- Returns the group names added to KEYS[1].
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
    local group_key = string.match(ARGV[i], "^(.*):[^:]*$")
    if group_key and string.sub(group_key, 1, #prefix) == prefix and #group_key > #prefix then
        local name = string.sub(group_key, #prefix + 1)
        if redis.call("SISMEMBER", KEYS[1], name) == 0
                and not redis.call("ZSCORE", KEYS[2], group_key)
                and redis.call("TYPE", group_key)["ok"] == "zset"
                and redis.call("ZCARD", group_key) > 0 then
            redis.call("SADD", KEYS[1], name)
            out[#out + 1] = name
        end
    end
end
return out
