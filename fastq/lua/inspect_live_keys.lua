-- inspect_live_keys: the live entries of asynq:servers, asynq:workers or asynq:schedulers,
-- pruning the stale ones (Asynq's listServerKeys / listWorkers / listSchedulerKeys).
-- KEYS[1] the index zset (score = expiry Unix s)
-- ARGV[1] now Unix s
-- Returns the member key names whose expiry is >= now.
local now = tonumber(ARGV[1])
local live = redis.call("ZRANGEBYSCORE", KEYS[1], now, "+inf")
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - 1)
return live
