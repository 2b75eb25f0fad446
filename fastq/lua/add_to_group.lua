-- add_to_group: one task to an aggregation group (Asynq's addToGroup / addToGroupUnique).
-- KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:g:<group>   KEYS[3] asynq:{q}:groups
-- KEYS[4] unique key (only for a unique task)
-- ARGV[1] TaskMessage bytes   ARGV[2] task id   ARGV[3] now Unix seconds   ARGV[4] group name
-- ARGV[5] lock TTL seconds (only for a unique task)
-- Returns 1 written, -1 duplicate, 0 ID conflict.
if KEYS[4] then
    local ok = redis.call("SET", KEYS[4], ARGV[2], "NX", "EX", ARGV[5])
    if not ok then
        return -1
    end
end
if redis.call("EXISTS", KEYS[1]) == 1 then
    if KEYS[4] then
        redis.call("DEL", KEYS[4])
    end
    return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating", "group", ARGV[4])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[4])
return 1
