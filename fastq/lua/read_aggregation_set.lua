-- read_aggregation_set: one page of an aggregation set's tasks, oldest first
-- (Asynq's readAggregationSet, paged so a large set never blocks Redis for long).
-- KEYS[1] asynq:{q}:g:<group>:<setID>   KEYS[2] asynq:{q}:aggregation_sets
-- ARGV[1] asynq:{q}:t:   ARGV[2] first rank   ARGV[3] page size
-- Members whose task hash is gone or no longer "aggregating" (changed by hand) are skipped.
-- Returns {registered, scanned, id1, msg1, id2, msg2, ...}: registered is 1 while the set is
-- still listed in KEYS[2] (0: it was reclaimed), scanned is how many members the page covered.
local registered = redis.call("ZSCORE", KEYS[2], KEYS[1]) and 1 or 0
local first = tonumber(ARGV[2])
local ids = redis.call("ZRANGE", KEYS[1], first, first + tonumber(ARGV[3]) - 1)
local out = {registered, #ids}
for _, id in ipairs(ids) do
    local fields = redis.call("HMGET", ARGV[1] .. id, "state", "msg")
    if fields[1] == "aggregating" and fields[2] then
        out[#out + 1] = id
        out[#out + 1] = fields[2]
    end
end
return out
