-- aggregation_discover: one SCAN step looking for groups that have tasks but are missing from
-- their queue's asynq:{q}:groups set, which only lists the groups aggregation checks. Go's
-- recoverer leaves a group in that state: it puts a stale aggregation set's tasks back into
-- asynq:{q}:g:<group> without adding the group name back. Found names are added back.
-- KEYS[1] asynq:{q1}:groups   KEYS[2] asynq:{q1}:aggregation_sets, then the same pair for each
-- further queue: KEYS[2i-1], KEYS[2i] for queue i (i = 1..n)
-- ARGV[1] SCAN cursor ("0" to start)   ARGV[2] MATCH pattern   ARGV[3] COUNT hint
-- ARGV[4] asynq:{q1}:g:   ARGV[5] asynq:{q1}:t:, then ARGV[2i+2], ARGV[2i+3] for queue i
-- SCAN reads the keyspace of the node it runs on: on Redis Cluster the caller passes one queue
-- per call, so the call runs on the node owning that queue's slot, where all its keys live.
-- A key asynq:{q}:g:<name> is taken for the zset of group <name> when: <name> is not listed yet,
-- the key is not a registered aggregation set (asynq:{q}:g:<group>:<setID>, always listed in
-- aggregation_sets while it exists, as in Go), it is a non-empty zset, and its oldest member's
-- task hash, if any, names <name> as its group (so an unregistered set is not mistaken for a
-- group named "<group>:<setID>"). Names are bytes (Lua strings); any name works.
-- Each step does O(COUNT) work plus O(1) per matching key, so it never blocks Redis for long.
-- Returns {next cursor, i1, name1, i2, name2, ...}: the names added and the index of their queue.
local step = redis.call("SCAN", ARGV[1], "MATCH", ARGV[2], "COUNT", ARGV[3])
local out = {step[1]}
local n = #KEYS / 2
for _, key in ipairs(step[2]) do
    for i = 1, n do
        local prefix = ARGV[2 * i + 2]
        local name = string.sub(key, #prefix + 1)
        if #name > 0 and string.sub(key, 1, #prefix) == prefix
                and redis.call("SISMEMBER", KEYS[2 * i - 1], name) == 0
                and not redis.call("ZSCORE", KEYS[2 * i], key)
                and redis.call("TYPE", key)["ok"] == "zset" then
            local oldest = redis.call("ZRANGE", key, 0, 0)
            if #oldest > 0 then
                local owner = redis.call("HGET", ARGV[2 * i + 3] .. oldest[1], "group")
                if not owner or owner == name then
                    redis.call("SADD", KEYS[2 * i - 1], name)
                    out[#out + 1] = i
                    out[#out + 1] = name
                end
            end
        end
    end
end
return out
