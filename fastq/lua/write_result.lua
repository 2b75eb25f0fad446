-- write_result: store a running task's result (Asynq's ResultWriter.Write), only if the
-- task still exists, so a late write cannot leave an orphan task hash (Asynq #1167).
-- KEYS[1] asynq:{q}:t:<id>   ARGV[1] result bytes
-- Returns 1 when written, 0 when the task is gone.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end
redis.call("HSET", KEYS[1], "result", ARGV[1])
return 1
