#!lua flags=allow-oom
-- limit_extend: push the concurrency slots of running tasks of one queue to now + lease seconds
-- (Redis time), with their task leases. Never creates a slot (XX) nor shortens one (GT).
-- KEYS[1], KEYS[2], ... asynq:{q}:fastq_slots:<name>[:<key>] zsets (one queue)
-- ARGV[1] lease seconds   ARGV[2..] pairs (index in KEYS of the slots key, task id)
-- Returns the new expiry (Unix s).
local expiry = fastq_now() + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
    redis.call("ZADD", KEYS[tonumber(ARGV[i])], "XX", "GT", expiry, ARGV[i + 1])
end
return expiry
