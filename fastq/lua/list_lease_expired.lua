-- list_lease_expired: tasks of one queue whose lease ended more than ARGV[1] seconds
-- ago by the Redis server clock (Asynq's listLeaseExpired, with a count limit).
-- KEYS[1] asynq:{q}:lease   ARGV[1] grace seconds   ARGV[2] asynq:{q}:t:   ARGV[3] max tasks
-- Returns {cutoff, id1, msg1, id2, msg2, ...} (cutoff = the Redis time used, for the settling
-- scripts to re-check against); IDs whose hash is gone are skipped, as in Asynq v0.25+.
local cutoff = fastq_now() - tonumber(ARGV[1])
local ids = redis.call("ZRANGE", KEYS[1], "-inf", "(" .. cutoff, "BYSCORE", "LIMIT", 0, tonumber(ARGV[3]))
local out = { cutoff }
for _, id in ipairs(ids) do
    local msg = redis.call("HGET", ARGV[2] .. id, "msg")
    if msg then
        out[#out + 1] = id
        out[#out + 1] = msg
    end
end
return out
