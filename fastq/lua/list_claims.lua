-- list_claims: the active tasks of one queue claimed by one worker, found by the prefix
-- of their lease token (tokens are "<server id>:<n>"). The supervisor uses it to
-- recover a dead worker's tasks at once instead of waiting for their leases to expire.
-- KEYS[1] asynq:{q}:lease   KEYS[2] asynq:{q}:fastq_flow   ARGV[1] asynq:{q}:t:   ARGV[2] token prefix ("<server id>:")
-- Returns {id1, token1, msg1, link1, id2, ...} (link: a workflow step's link, or "").
-- O(tasks in the lease set).
local out = {}
local n = #ARGV[2]
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do
    local key = ARGV[1] .. id
    local token = redis.call("HGET", key, "lease_token")
    if token and string.sub(token, 1, n) == ARGV[2] then
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = redis.call("HGET", key, "msg") or ""
        out[#out + 1] = redis.call("HGET", KEYS[2], id) or ""
    end
end
return out
