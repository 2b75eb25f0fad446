#!lua flags=allow-oom
-- flow_done: acknowledge one successful workflow step and follow its link in the same script,
-- so a worker dying between "done" and "next" neither loses nor duplicates the next step.
-- The step is settled as complete (kept until its expiry, with its result) or done (deleted).
-- Then, for a chain link: the next step is created from its template (payload: the template's
-- payload head .. this step's result .. its tail) and the template is deleted. For a chord link:
-- the result is stored as member i's (once: HSETNX) and counted; the member that completes the
-- count creates the callback with the JSON list of the members' results, in order.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:completed
-- KEYS[4] asynq:{q}:processed:<date>   KEYS[5] asynq:{q}:processed   KEYS[6] asynq:{q}:t:<id>
-- KEYS[7] the link: the next step's template (chain) or the chord
-- KEYS[8] the task key of the task to create   KEYS[9] its queue's pending   KEYS[10] its scheduled
-- ARGV[1] daily-stats expire-at   ARGV[2] task id   ARGV[3] lease token   ARGV[4] lease cutoff or ""
-- ARGV[5] expiry Unix s ("0": delete the task)   ARGV[6] TaskMessage with completed_at
-- ARGV[7] unique key or ""   ARGV[8] "" or "1" .. result JSON   ARGV[9] "chain" or "chord"
-- ARGV[10] the ID of the task to create   ARGV[11] the member's index (chord)
-- Returns {} when settled, {id} when the task is no longer held with that token.
local id = ARGV[2]
if not fastq_release(KEYS[1], KEYS[2], id, KEYS[6], ARGV[3], ARGV[4]) then
    return { id }
end
local result = ARGV[8]
local state = "done"
if ARGV[5] == "0" then
    redis.call("DEL", KEYS[6])
else
    state = "completed"
    redis.call("ZADD", KEYS[3], ARGV[5], id)
    redis.call("HSET", KEYS[6], "msg", ARGV[6], "state", "completed")
    if result ~= "" then
        redis.call("HSET", KEYS[6], "result", string.sub(result, 2))
    end
end
fastq_unlock(ARGV[7], id)
fastq_incr_daily(KEYS[4], 1, ARGV[1])
fastq_incr_total(KEYS[5], 1)

local value = "null"
if result ~= "" then
    value = string.sub(result, 2)
end
local fields = { "mh", "mt", "ph", "pt", "flow", "at" }
if ARGV[9] == "chain" then
    local t = redis.call("HMGET", KEYS[7], unpack(fields))
    if t[1] then
        fastq_flow_create(KEYS[8], KEYS[9], KEYS[10], ARGV[10], t, value)
        redis.call("DEL", KEYS[7])
    end
elseif ARGV[9] == "chord" then
    if redis.call("HSETNX", KEYS[7], "r" .. ARGV[11], value) == 1 then
        local done = redis.call("HINCRBY", KEYS[7], "done", 1)
        local chord = redis.call("HMGET", KEYS[7], "n", "state")
        local n = tonumber(chord[1])
        if n and done >= n and chord[2] == "waiting" then
            local parts = {}
            for i = 0, n - 1, 500 do
                local names = {}
                for j = i, math.min(i + 499, n - 1) do
                    names[#names + 1] = "r" .. j
                end
                local got = redis.call("HMGET", KEYS[7], unpack(names))
                for j = 1, #got do
                    parts[#parts + 1] = got[j] or "null"
                end
                fastq_bulk("HDEL", KEYS[7], names)
            end
            local t = redis.call("HMGET", KEYS[7], unpack(fields))
            fastq_flow_create(KEYS[8], KEYS[9], KEYS[10], ARGV[10], t, "[" .. table.concat(parts, ",") .. "]")
            redis.call("HSET", KEYS[7], "state", "done")
            redis.call("EXPIRE", KEYS[7], 86400)
        end
    end
end
fastq_settled(KEYS[1], state, { id })
return {}
