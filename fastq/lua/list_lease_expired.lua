-- list_lease_expired: tasks of one queue whose lease ended more than ARGV[1] seconds
-- ago by the Redis server clock (Asynq's listLeaseExpired, with a count limit).
-- KEYS[1] asynq:{q}:lease   KEYS[2] asynq:{q}:fastq_flow   ARGV[1] grace seconds   ARGV[2] asynq:{q}:t:   ARGV[3] max tasks
-- Returns {cutoff, id1, msg1, link1, id2, ...} (link: a workflow step's link, or ""; cutoff = the Redis time used, for the settling
-- scripts to re-check against). An ID whose hash has no message comes with an empty one: Asynq
-- v0.25+ skips those, which leaves them active forever; fastq archives them with the reason.
local cutoff = fastq_now() - tonumber(ARGV[1])
local ids = redis.call("ZRANGE", KEYS[1], "-inf", "(" .. cutoff, "BYSCORE", "LIMIT", 0, tonumber(ARGV[3]))
local out = { cutoff }
for _, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = redis.call("HGET", ARGV[2] .. id, "msg") or ""
    out[#out + 1] = redis.call("HGET", KEYS[2], id) or ""
end
return out
