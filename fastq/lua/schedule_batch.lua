-- schedule_batch: many tasks of one queue to the scheduled zset in one call.
-- KEYS[1] asynq:{q}:scheduled   KEYS[1+i] asynq:{q}:t:<id i>
-- ARGV[1] process-at Unix seconds, or "+<seconds>" from Redis time (same for all)   ARGV[2i] id i   ARGV[2i+1] TaskMessage bytes
-- Returns the 1-based indexes of tasks skipped because their ID exists.
local score = fastq_score(ARGV[1])
local conflicts = {}
local members = {}
for i = 1, #KEYS - 1 do
    local key = KEYS[i + 1]
    if redis.call("EXISTS", key) == 1 then
        conflicts[#conflicts + 1] = i
    else
        redis.call("HSET", key, "msg", ARGV[2 * i + 1], "state", "scheduled")
        members[#members + 1] = score
        members[#members + 1] = ARGV[2 * i]
    end
end
fastq_bulk("ZADD", KEYS[1], members)
return conflicts
