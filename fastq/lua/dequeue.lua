#!lua flags=allow-oom
-- dequeue: claim up to N pending tasks from the first queue, in the order given,
-- that is not paused and has pending tasks. Each claimed ID moves pending -> active
-- (same ends as Asynq's RPOPLPUSH), gets state "active", loses "pending_since" and
-- gets a lease in asynq:{q}:lease scored by its expiry (Redis server time + lease), and
-- the claim's lease_token in its hash (fencing; Go readers ignore the extra field).
-- KEYS[1] asynq:{q}:pending   KEYS[2] asynq:{q}:paused   KEYS[3] asynq:{q}:active   KEYS[4] asynq:{q}:lease
-- KEYS[5] asynq:{q}:fastq_flow of the first queue to try; KEYS[5i-4..5i] the same five keys of queue i
-- ARGV[1] N   ARGV[2] lease seconds   ARGV[3] lease token   ARGV[3+i] asynq:{q}:t: of queue i
-- Returns {} when every queue is paused or empty, else
-- {queue index (1-based), lease expiry, links, id1, msg1, id2, msg2, ...}; msg is nil when the hash
-- has none; links is {} or {i, link, ...}: the workflow link (in asynq:{q}:fastq_flow) of the i-th
-- task (1-based) for the tasks that are a step of a fastq workflow (chain, chord) - usually none:
-- without workflows in the queue that hash does not exist and costs one EXISTS per call.
local n = tonumber(ARGV[1])
for q = 1, #KEYS / 5 do
    local base = 5 * (q - 1)
    if redis.call("EXISTS", KEYS[base + 2]) == 0 then
        local ids = redis.call("RPOP", KEYS[base + 1], n)
        if ids then
            local expiry = fastq_now() + tonumber(ARGV[2])
            local prefix = ARGV[3 + q]
            local links = {}
            local out = { q, expiry, links }
            local lease = {}
            for i, id in ipairs(ids) do
                local key = prefix .. id
                redis.call("HSET", key, "state", "active", "lease_token", ARGV[3])
                redis.call("HDEL", key, "pending_since")
                out[2 * i + 2] = id
                out[2 * i + 3] = redis.call("HGET", key, "msg")
                lease[2 * i - 1] = expiry
                lease[2 * i] = id
            end
            if redis.call("EXISTS", KEYS[base + 5]) == 1 then
                for i = 1, #ids, 500 do
                    local got = redis.call("HMGET", KEYS[base + 5], unpack(ids, i, math.min(i + 499, #ids)))
                    for j = 1, #got do
                        if got[j] then
                            links[#links + 1] = i + j - 1
                            links[#links + 1] = got[j]
                        end
                    end
                end
            end
            fastq_bulk("LPUSH", KEYS[base + 3], ids)
            fastq_bulk("ZADD", KEYS[base + 4], lease)
            return out
        end
    end
end
return {}
