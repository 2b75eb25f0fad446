#!lua flags=allow-oom
-- limit_admit: admit freshly claimed tasks of one queue that have rate or concurrency limits
-- (fastq.server.limits), in one call for a whole dequeue batch. A task over a limit leaves
-- active for the scheduled zset (state "scheduled", lease and lease_token removed, `retried`
-- untouched), so the worker takes other work and the task comes back when it may run.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:scheduled
-- KEYS[4..] the limit keys the tuples point at: asynq:{q}:fastq_rate:<name>[:<key>] (string),
--           asynq:{q}:fastq_slots:<name>[:<key>] and asynq:{q}:fastq_wait:<name>[:<key>] (zsets)
-- ARGV[1] asynq:{q}:t:   ARGV[2] the claims' lease token   ARGV[3] seconds the first waiter for a
--         concurrency slot stays scheduled unless a release wakes it first; the n-th waits
--         ARGV[3] x (1 + n / limit) seconds, at most ARGV[7] (releases wake them in order)
-- ARGV[4] rate tolerance (s): a task whose rate slot is at most this far ahead runs now
-- ARGV[5] seconds a reserved rate slot stays good after its time (later: the task is checked again)
-- ARGV[6] the claims' lease (s): a concurrency slot expires with it (extended with it)
-- ARGV[7] the longest a waiter stays scheduled before it is checked again (s)
-- ARGV[8..] groups of claims with the same limits: (index in KEYS of the rate key or 0, rate interval
--           in seconds (1 / rate), index of the slots key or 0, concurrency limit, index of the
--           waiters key or 0, n, then n task ids)
-- Rate: GCRA on a theoretical arrival time (TAT, Unix s by the Redis clock) kept in the rate key.
-- A task is admitted when TAT <= now + tolerance, and TAT moves on by one interval. Otherwise it
-- reserves the slot at TAT (TAT moves on) and waits scheduled until then, with the hash field
-- fastq_rate_at = its slot; back within the grace after that time, the reservation admits it
-- without counting it again (after an outage the late ones are checked again: no burst).
-- Concurrency: the slots zset holds the IDs of admitted tasks scored by their lease expiry;
-- expired members are dropped first; a task whose ID is there already (an earlier run whose lease
-- is being recovered) takes no second slot. A task waiting for a slot is listed in the waiters
-- zset, scored by when it began to wait (hash field fastq_wait_since, kept until it gets a slot,
-- so a woken waiter that loses the slot to another claim keeps its place); limit_release wakes
-- the oldest. The claims were made by this worker a moment ago: only
-- a deferral checks the lease token (fastq_release); an admitted task is fenced at its outcome.
-- Returns one character per task id, in ARGV order: "1" admitted, "0" deferred, "-" not held
-- with this token (left alone).
local t = redis.call("TIME")
local whole = tonumber(t[1])
local now = whole + tonumber(t[2]) / 1000000
local backoff, tolerance, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local expiry, max_wait = whole + tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {}
local counts = {} -- slots key index -> members (expired ones dropped on first use)
local tats = {} -- rate key index -> TAT (written once at the end)
local waiters = {} -- waiters key index -> members (read once, when needed)
local function admit(id, rk, interval, sk, limit, wk)
    local key = ARGV[1] .. id
    local status = 1
    local defer_at = nil
    local waiting = false
    if sk > 0 then
        local slots = KEYS[sk]
        local count = counts[sk]
        if not count then
            redis.call("ZREMRANGEBYSCORE", slots, "-inf", "(" .. whole)
            count = redis.call("ZCARD", slots)
        end
        if count >= limit and not redis.call("ZSCORE", slots, id) then
            status = 0
            waiting = true
            defer_at = now + backoff
        end
        counts[sk] = count
    end
    if status == 1 and rk > 0 then
        local tat = tats[rk] or tonumber(redis.call("GET", KEYS[rk]) or "0")
        if tat < now then
            tat = now
        end
        if tat <= now + tolerance then
            tat = tat + interval
        else
            local reserved = tonumber(redis.call("HGET", key, "fastq_rate_at") or "0")
            if reserved > 0 then
                redis.call("HDEL", key, "fastq_rate_at")
            end
            if reserved < now - grace then
                status = 0
                defer_at = tat
                tat = tat + interval
            end
        end
        tats[rk] = tat
    end
    if status == 1 then
        if sk > 0 then
            counts[sk] = counts[sk] + redis.call("ZADD", KEYS[sk], expiry, id)
            if wk > 0 then
                waiters[wk] = waiters[wk] or redis.call("ZCARD", KEYS[wk])
                if waiters[wk] > 0 and redis.call("ZREM", KEYS[wk], id) == 1 then -- it waited: no more
                    waiters[wk] = waiters[wk] - 1
                    redis.call("HDEL", key, "fastq_wait_since")
                end
            end
        end
    elseif fastq_release(KEYS[1], KEYS[2], id, key, ARGV[2], "") then
        if waiting then
            if wk > 0 then -- in line by when it began to wait (a woken waiter that lost the slot keeps its place)
                local since = redis.call("HGET", key, "fastq_wait_since")
                if not since then
                    since = string.format("%.6f", now)
                    redis.call("HSET", key, "fastq_wait_since", since)
                end
                waiters[wk] = (waiters[wk] or redis.call("ZCARD", KEYS[wk])) + redis.call("ZADD", KEYS[wk], "NX", since, id)
                local rank = redis.call("ZRANK", KEYS[wk], id)
                defer_at = now + math.min(backoff * (1 + rank / limit), max_wait)
            end
            redis.call("HSET", key, "state", "scheduled")
        else
            if wk > 0 then
                redis.call("ZREM", KEYS[wk], id)
            end
            redis.call("HSET", key, "state", "scheduled", "fastq_rate_at", string.format("%.6f", defer_at))
        end
        redis.call("ZADD", KEYS[3], string.format("%.6f", defer_at), id)
    else
        status = -1
    end
    return status
end

local chars = {[1] = "1", [0] = "0", [-1] = "-"}
local i = 8
while i <= #ARGV do
    local rk, interval = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    local sk, limit, wk = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
    local n = tonumber(ARGV[i + 5])
    for j = i + 6, i + 5 + n do
        out[#out + 1] = chars[admit(ARGV[j], rk, interval, sk, limit, wk)]
    end
    i = i + 6 + n
end
for rk, tat in pairs(tats) do
    redis.call("SET", KEYS[rk], string.format("%.6f", tat), "PX", math.ceil((tat - now) * 1000) + 1000)
end
return table.concat(out)
