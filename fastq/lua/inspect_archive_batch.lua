-- inspect_archive_batch: archive up to ARGV[2] tasks from pending (oldest first) or from a
-- zset (scheduled, retry or a group; lowest score first); the caller loops (Asynq's
-- archiveAll* do all at once).
-- KEYS[1] the source   KEYS[2] asynq:{q}:archived   KEYS[3] asynq:{q}:groups
-- ARGV[1] asynq:{q}:t:   ARGV[2] batch size   ARGV[3] "list" or "zset"
-- ARGV[4] group name when KEYS[1] is a group, else ""   ARGV[5] now Unix s
-- ARGV[6] cutoff Unix s (now - 90 days)   ARGV[7] max archive size (10000)
-- Then trims the archive like Asynq (older than the cutoff, beyond the size) but also
-- deletes the trimmed tasks' hashes, at most ARGV[2] + 1000 per call.
-- Returns the number of tasks archived (0 when the source is empty).
local n = tonumber(ARGV[2])
local ids = fastq_take(KEYS[1], n, ARGV[3])
for _, id in ipairs(ids) do
    redis.call("ZADD", KEYS[2], ARGV[5], id)
    redis.call("HSET", ARGV[1] .. id, "state", "archived")
end
if ARGV[4] ~= "" and redis.call("EXISTS", KEYS[1]) == 0 then
    redis.call("SREM", KEYS[3], ARGV[4])
end
local function drop(victims)
    for _, id in ipairs(victims) do
        redis.call("DEL", ARGV[1] .. id)
        redis.call("ZREM", KEYS[2], id)
    end
end
drop(redis.call("ZRANGE", KEYS[2], "-inf", ARGV[6], "BYSCORE", "LIMIT", 0, 1000))
local excess = redis.call("ZCARD", KEYS[2]) - tonumber(ARGV[7]) + 1
if excess > 0 then
    drop(redis.call("ZRANGE", KEYS[2], 0, math.min(excess, n + 1000) - 1))
end
return #ids
