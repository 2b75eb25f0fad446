#!lua flags=allow-oom
-- flow_done: acknowledge successful workflow steps of one queue and follow each one's link in
-- the same script, so a worker dying between "done" and "next" neither loses nor duplicates the
-- next step. A step is settled as complete (kept until its expiry, with its result) or done
-- (deleted). Then, for a chain link: the next step is created from its template (payload: the
-- template's payload head .. this step's result .. its tail) and the template is deleted. For a
-- chord link: the result is stored as member i's (once: HSETNX) and counted; the member that
-- completes the count creates the callback with the JSON list of the members' results, in order.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:completed
-- KEYS[4] asynq:{q}:processed:<date>   KEYS[5] asynq:{q}:processed   KEYS[6] asynq:{q}:fastq_flow
-- KEYS[7..] per step, six keys: asynq:{q}:t:<id>; the link: the next step's template (chain) or
-- the chord; the task key of the task to create; its queue's pending, scheduled and fastq_flow
-- ARGV[1] daily-stats expire-at   ARGV[2] lease cutoff or ""
-- ARGV[3..] per step, nine values: task id, lease token, expiry Unix s ("0": delete the task),
-- TaskMessage with completed_at, unique key or "", "" or "1" .. result JSON, "chain" or "chord",
-- the ID of the task to create, the member's index (chord)
-- Returns the IDs of the steps that were not settled (no longer held with that token).
local missing = {}
local states = { done = {}, completed = {} }
local settled = {}
local taken = {}
local count = 0
local fields = { "mh", "mt", "ph", "pt", "flow", "at" }
local k = 7
for a = 3, #ARGV, 9 do
    local id, task_key = ARGV[a], KEYS[k]
    local link, new_key, pending, scheduled, links = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4],
        KEYS[k + 5]
    k = k + 6
    if not fastq_unlist(KEYS[1], KEYS[2], id, task_key, ARGV[a + 1], ARGV[2], taken) then
        missing[#missing + 1] = id
    else
        local result = ARGV[a + 5]
        if ARGV[a + 2] == "0" then
            redis.call("DEL", task_key)
            states.done[#states.done + 1] = id
        else
            redis.call("ZADD", KEYS[3], ARGV[a + 2], id)
            if result ~= "" then
                redis.call("HSET", task_key, "msg", ARGV[a + 3], "state", "completed", "result", string.sub(result, 2))
            else
                redis.call("HSET", task_key, "msg", ARGV[a + 3], "state", "completed")
            end
            redis.call("HDEL", task_key, "lease_token")
            states.completed[#states.completed + 1] = id
        end
        fastq_unlock(ARGV[a + 4], id)
        redis.call("HDEL", KEYS[6], id)
        count = count + 1
        settled[count] = id

        local value = "null"
        if result ~= "" then
            value = string.sub(result, 2)
        end
        if ARGV[a + 6] == "chain" then
            local t = redis.call("HMGET", link, unpack(fields))
            if t[1] then
                fastq_flow_create(new_key, pending, scheduled, links, ARGV[a + 7], t, value)
                redis.call("DEL", link)
            end
        elseif ARGV[a + 6] == "chord" and redis.call("HSETNX", link, "r" .. ARGV[a + 8], value) == 1 then
            local done = redis.call("HINCRBY", link, "done", 1)
            local chord = redis.call("HMGET", link, "n", "state")
            local n = tonumber(chord[1])
            if n and done >= n and chord[2] == "waiting" then
                local parts = {}
                for i = 0, n - 1, 500 do
                    local names = {}
                    for j = i, math.min(i + 499, n - 1) do
                        names[#names + 1] = "r" .. j
                    end
                    local got = redis.call("HMGET", link, unpack(names))
                    for j = 1, #got do
                        parts[#parts + 1] = got[j] or "null"
                    end
                    fastq_bulk("HDEL", link, names)
                end
                local t = redis.call("HMGET", link, unpack(fields))
                fastq_flow_create(new_key, pending, scheduled, links, ARGV[a + 7], t,
                                  "[" .. table.concat(parts, ",") .. "]")
                redis.call("HSET", link, "state", "done")
                redis.call("EXPIRE", link, 86400)
            end
        end
    end
end
if count > 0 then
    fastq_unlease(KEYS[2], settled)
    fastq_incr_daily(KEYS[4], count, ARGV[1])
    fastq_incr_total(KEYS[5], count)
end
fastq_settled(KEYS[1], "done", states.done)
fastq_settled(KEYS[1], "completed", states.completed)
return missing
