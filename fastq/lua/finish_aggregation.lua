#!lua flags=allow-oom
-- finish_aggregation: enqueue the aggregated task and delete the aggregation set with its task
-- hashes, atomically and only while the set is still the caller's (registered in KEYS[2]; a set
-- reclaimed after its deadline is not). Asynq does this as an enqueue followed by
-- deleteAggregationSet; one script means a reclaimed set is never aggregated twice.
-- KEYS[1] asynq:{q}:g:<group>:<setID>   KEYS[2] asynq:{q}:aggregation_sets   KEYS[3] asynq:{q}:archived
-- KEYS[4] asynq:{q}:t:<new id>   KEYS[5] asynq:{q}:pending, asynq:{q}:scheduled or asynq:{q}:g:<new group>
-- KEYS[6] asynq:{q}:groups   KEYS[7] unique key (only for a unique aggregated task)
-- ARGV[1] asynq:{q}:t:   ARGV[2] "enqueue", "schedule", "group" or "none" (nothing to enqueue)
-- ARGV[3] TaskMessage bytes   ARGV[4] new task id   ARGV[5] scheduled score (Unix s or "+<s>")
-- or group name   ARGV[6] unique lock TTL seconds (0 = not unique)
-- ARGV[7..] pairs (task id, archived TaskMessage) for members whose message could not be decoded:
-- they are archived instead of deleted.
-- The new task is written as enqueue / enqueue_unique / schedule / schedule_unique /
-- add_to_group write it. Returns 1 done, 0 ID conflict, -1 duplicate (unique lock held),
-- -2 the set is no longer ours (nothing written). On 0 and -1 the set is kept.
if not redis.call("ZSCORE", KEYS[2], KEYS[1]) then
    return -2
end
local kind = ARGV[2]
local unique = tonumber(ARGV[6]) > 0
if kind ~= "none" then
    if unique then
        if not redis.call("SET", KEYS[7], ARGV[4], "NX", "EX", ARGV[6]) then
            return -1
        end
    end
    if redis.call("EXISTS", KEYS[4]) == 1 then
        if unique then
            redis.call("DEL", KEYS[7])
        end
        return 0
    end
    if kind == "enqueue" then
        redis.call("HSET", KEYS[4], "msg", ARGV[3], "state", "pending", "pending_since", fastq_now_ns())
        local was_empty = redis.call("LLEN", KEYS[5]) == 0
        redis.call("LPUSH", KEYS[5], ARGV[4])
        fastq_notify(KEYS[5], was_empty) -- wake idle fastq workers of the queue
    elseif kind == "schedule" then
        redis.call("HSET", KEYS[4], "msg", ARGV[3], "state", "scheduled")
        redis.call("ZADD", KEYS[5], fastq_score(ARGV[5]), ARGV[4])
    else
        redis.call("HSET", KEYS[4], "msg", ARGV[3], "state", "aggregating", "group", ARGV[5])
        redis.call("ZADD", KEYS[5], fastq_now(), ARGV[4])
        redis.call("SADD", KEYS[6], ARGV[5])
    end
    if unique and kind ~= "group" then
        redis.call("HSET", KEYS[4], "unique_key", KEYS[7])
    end
end
local now = fastq_now()
for i = 7, #ARGV, 2 do
    local key = ARGV[1] .. ARGV[i]
    if redis.call("HGET", key, "state") == "aggregating" then
        redis.call("HSET", key, "msg", ARGV[i + 1], "state", "archived")
        redis.call("ZADD", KEYS[3], now, ARGV[i])
    end
end
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, id in ipairs(ids) do
    local key = ARGV[1] .. id
    if redis.call("HGET", key, "state") == "aggregating" then
        redis.call("DEL", key)
    end
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], KEYS[1])
return 1
