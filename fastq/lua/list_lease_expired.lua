-- list_lease_expired: tasks of one queue whose lease ended more than ARGV[1] seconds
-- ago by the Redis server clock (Asynq's listLeaseExpired, with a count limit).
-- KEYS[1] asynq:{q}:lease   ARGV[1] grace seconds   ARGV[2] asynq:{q}:t:   ARGV[3] max tasks
-- Returns {cutoff, id1, msg1, link1, id2, ...} (link: the fastq_flow field of a workflow step, or ""; cutoff = the Redis time used, for the settling
-- scripts to re-check against). An ID whose hash has no message comes with an empty one: Asynq
-- v0.25+ skips those, which leaves them active forever; fastq archives them with the reason.
local cutoff = fastq_now() - tonumber(ARGV[1])
local ids = redis.call("ZRANGE", KEYS[1], "-inf", "(" .. cutoff, "BYSCORE", "LIMIT", 0, tonumber(ARGV[3]))
local out = { cutoff }
for _, id in ipairs(ids) do
    out[#out + 1] = id
    local fields = redis.call("HMGET", ARGV[2] .. id, "msg", "fastq_flow")
    out[#out + 1] = fields[1] or ""
    out[#out + 1] = fields[2] or ""
end
return out
