#!lua flags=allow-oom
-- aggregation_check: decide whether one group is ready and, if so, move its oldest tasks into a
-- new aggregation set owned by the caller (Asynq's aggregationCheck).
-- KEYS[1] asynq:{q}:g:<group>   KEYS[2] asynq:{q}:g:<group>:<setID> (new)
-- KEYS[3] asynq:{q}:aggregation_sets   KEYS[4] asynq:{q}:groups
-- ARGV[1] max size (0 = none)   ARGV[2] max delay seconds (0 = none)   ARGV[3] grace period seconds
-- ARGV[4] set timeout seconds (the set's deadline is Redis time + this)   ARGV[5] group name
-- Ready when: size >= max size, or the oldest task waited max delay, or nothing was added during
-- the grace period (all judged by the Redis clock). Work is O(log N + max size): a partial move
-- copies at most max size members, a whole-group move is a RENAME.
-- Differences from Go (invisible to its readers): an empty group's name is removed from
-- KEYS[4]; a set that takes the whole group is made by RENAME instead of copying every member.
-- Returns 1 when a set was created, 0 otherwise.
local size = redis.call("ZCARD", KEYS[1])
if size == 0 then
    redis.call("SREM", KEYS[4], ARGV[5])
    return 0
end
local max_size = tonumber(ARGV[1])
local now = fastq_now()

local function take_all()
    redis.call("RENAME", KEYS[1], KEYS[2])
    redis.call("SREM", KEYS[4], ARGV[5])
end

local ready = false
if max_size > 0 and size >= max_size then
    if size == max_size then
        take_all()
    else
        local res = redis.call("ZRANGE", KEYS[1], 0, max_size - 1, "WITHSCORES")
        local items = {}
        for i = 1, #res, 2 do
            items[#items + 1] = res[i + 1]
            items[#items + 1] = res[i]
        end
        fastq_bulk("ZADD", KEYS[2], items)
        redis.call("ZREMRANGEBYRANK", KEYS[1], 0, max_size - 1)
    end
    ready = true
else
    -- Below max size, so a ready group moves whole (as Go's "up to max size" does).
    local max_delay = tonumber(ARGV[2])
    if max_delay > 0 then
        local oldest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
        ready = tonumber(oldest[2]) <= now - max_delay
    end
    if not ready then
        local newest = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
        ready = tonumber(newest[2]) <= now - tonumber(ARGV[3])
    end
    if ready then
        take_all()
    end
end
if not ready then
    return 0
end
redis.call("ZADD", KEYS[3], now + tonumber(ARGV[4]), KEYS[2])
return 1
