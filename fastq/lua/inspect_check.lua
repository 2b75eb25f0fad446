-- inspect_check: a liveness probe that proves scripts run, not only PING (`fastq check`).
-- KEYS[1] asynq:queues
-- ARGV[1] a queue name to look for, or "" for none
-- Returns {Redis time Unix s, 1 if ARGV[1] is "" or a known queue else 0}.
local known = 1
if ARGV[1] ~= "" then
    known = redis.call("SISMEMBER", KEYS[1], ARGV[1])
end
return {tonumber(redis.call("TIME")[1]), known}
