-- inspect_queue_stats: one queue's counters, latency input and sampled memory usage
-- (Asynq's currentStats + memoryUsage in one call), without the O(#groups) loop of #1160.
-- KEYS[1] pending  KEYS[2] active  KEYS[3] scheduled  KEYS[4] retry  KEYS[5] archived
-- KEYS[6] completed  KEYS[7] processed:<today>  KEYS[8] failed:<today>  KEYS[9] processed
-- KEYS[10] failed  KEYS[11] paused  KEYS[12] groups
-- ARGV[1] asynq:{q}:t:   ARGV[2] asynq:{q}:g:   ARGV[3] most groups summed here (e.g. 1000)
-- ARGV[4] tasks sampled per container for memory (20)   ARGV[5] groups sampled for memory (5)
-- Returns {pending, active, scheduled, retry, archived, completed, processed_today,
--   failed_today, processed_total, failed_total (counters as stored, bulk strings or 0),
--   paused 0/1, oldest pending_since (ns, 0 if none), number of groups,
--   aggregating count (-1 when there are more groups than ARGV[3]: the caller sums them in
--   SSCAN batches), memory of containers and their tasks (a decimal string),
--   sampled bytes of aggregating tasks, number of aggregating tasks sampled}.
local res = {}
local counts = {}
counts[1] = redis.call("LLEN", KEYS[1])
counts[2] = redis.call("LLEN", KEYS[2])
for i = 3, 6 do
    counts[i] = redis.call("ZCARD", KEYS[i])
end
for i = 1, 6 do
    res[#res + 1] = counts[i]
end
for i = 7, 10 do
    res[#res + 1] = redis.call("GET", KEYS[i]) or 0
end
res[#res + 1] = redis.call("EXISTS", KEYS[11])
local oldest = 0
if counts[1] > 0 then
    local id = redis.call("LRANGE", KEYS[1], -1, -1)[1]
    oldest = redis.call("HGET", ARGV[1] .. id, "pending_since") or 0
end
res[#res + 1] = oldest
local ngroups = redis.call("SCARD", KEYS[12])
res[#res + 1] = ngroups
local aggregating = -1
if ngroups <= tonumber(ARGV[3]) then
    aggregating = 0
    for _, gname in ipairs(redis.call("SMEMBERS", KEYS[12])) do
        aggregating = aggregating + redis.call("ZCARD", ARGV[2] .. gname)
    end
end
res[#res + 1] = aggregating

-- Memory: as Asynq, the average MEMORY USAGE of the first ARGV[4] task hashes times the
-- container size, plus the container itself; returned with 17 digits so the
-- caller's float equals this one exactly.
local sample = tonumber(ARGV[4])
local memory = 0
for _, i in ipairs({2, 1, 3, 4, 5, 6}) do  -- Asynq's order (active first), so float sums match
    local ids
    if i <= 2 then
        ids = redis.call("LRANGE", KEYS[i], 0, sample - 1)
    else
        ids = redis.call("ZRANGE", KEYS[i], 0, sample - 1)
    end
    if #ids > 0 then
        local total = 0
        for _, id in ipairs(ids) do
            total = total + (redis.call("MEMORY", "USAGE", ARGV[1] .. id) or 0)
        end
        memory = memory + (total / #ids) * counts[i]
    end
    memory = memory + (redis.call("MEMORY", "USAGE", KEYS[i]) or 0)
end
res[#res + 1] = string.format("%.17g", memory)
local group_total, group_sampled = 0, 0
if ngroups > 0 then
    for _, gname in ipairs(redis.call("SRANDMEMBER", KEYS[12], tonumber(ARGV[5]))) do
        for _, id in ipairs(redis.call("ZRANGE", ARGV[2] .. gname, 0, sample - 1)) do
            local bytes = redis.call("MEMORY", "USAGE", ARGV[1] .. id)
            if bytes then
                group_total = group_total + bytes
                group_sampled = group_sampled + 1
            end
        end
    end
end
res[#res + 1] = group_total
res[#res + 1] = group_sampled
return res
