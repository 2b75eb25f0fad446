-- list_claims: the active tasks of one queue claimed by one worker, found by the prefix
-- of their lease token (tokens are "<server id>:<n>"). The supervisor uses it to
-- recover a dead worker's tasks at once instead of waiting for their leases to expire.
-- KEYS[1] asynq:{q}:lease   ARGV[1] asynq:{q}:t:   ARGV[2] token prefix ("<server id>:")
-- Returns {id1, token1, msg1, link1, id2, ...} (link: the fastq_flow field of a workflow step, or "").
-- O(tasks in the lease set).
local out = {}
local n = #ARGV[2]
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do
    local key = ARGV[1] .. id
    local token = redis.call("HGET", key, "lease_token")
    if token and string.sub(token, 1, n) == ARGV[2] then
        out[#out + 1] = id
        out[#out + 1] = token
        local fields = redis.call("HMGET", key, "msg", "fastq_flow")
        out[#out + 1] = fields[1] or ""
        out[#out + 1] = fields[2] or ""
    end
end
return out
