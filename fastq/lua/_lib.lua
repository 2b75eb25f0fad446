-- Shared helpers. fastq/_scripts.py prepends this file to every script, so each
-- script below can call them; they are not scripts on their own.

local FASTQ_MAX_INT64 = "9223372036854775807"

-- Add n to an all-time counter. Asynq wraps a counter that reached MaxInt64
-- back to 1 on its next increment; INCRBY refuses to overflow, so fall back to
-- Asynq's one-by-one rule in that (rare) case.
local function fastq_incr_total(key, n)
    local reply = redis.pcall("INCRBY", key, n)
    if type(reply) == "table" and reply.err then
        for _ = 1, n do
            if redis.call("GET", key) == FASTQ_MAX_INT64 then
                redis.call("SET", key, 1)
            else
                redis.call("INCR", key)
            end
        end
    end
end

-- Add n to a daily counter; a new day's key expires at expire_at (now + 90 days).
local function fastq_incr_daily(key, n, expire_at)
    if redis.call("INCRBY", key, n) == n then
        redis.call("EXPIREAT", key, expire_at)
    end
end

-- Redis server time in whole Unix seconds (the lease clock).
local function fastq_now()
    return tonumber(redis.call("TIME")[1])
end

-- Redis server time as a decimal string of Unix nanoseconds (for pending_since).
local function fastq_now_ns()
    local t = redis.call("TIME")
    return t[1] .. string.format("%06d", tonumber(t[2])) .. "000"
end

-- A zset score in Unix seconds: the argument itself, or "+<seconds>" meaning that long after
-- Redis server time (process_in is measured by the Redis clock, not the client's).
local function fastq_score(arg)
    if string.sub(arg, 1, 1) == "+" then
        local t = redis.call("TIME")
        return math.floor(tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(string.sub(arg, 2)))
    end
    return arg
end

-- Run `cmd key [flag1 flag2] items...` in slices, so a large batch never overflows
-- Lua's unpack().
local function fastq_bulk(cmd, key, items, flag1, flag2)
    local step = 500
    for i = 1, #items, step do
        local j = math.min(i + step - 1, #items)
        if flag2 then
            redis.call(cmd, key, flag1, flag2, unpack(items, i, j))
        else
            redis.call(cmd, key, unpack(items, i, j))
        end
    end
end

-- Take an active task off the active list if this claim may settle it; true when it was taken.
-- Fencing: with a non-empty token the task hash must still carry that lease_token (a
-- worker whose lease was lost and whose task was claimed again cannot settle it); with a
-- non-empty cutoff the lease must have expired at or before it (a recoverer never takes a
-- task whose owner extended the lease meanwhile). LREM counts from the right (-1): settled
-- tasks are usually the oldest, nearest that end. ``taken`` (a table the caller keeps for
-- the whole call) refuses an ID seen twice in one call, as the one-by-one release did.
-- The lease and the lease_token field stay: batch callers drop the leases of all taken IDs
-- with one fastq_unlease, and the field with the hash (DEL) or with an HDEL.
local function fastq_unlist(active, lease, id, task_key, token, cutoff, taken)
    if taken[id] then
        return false
    end
    if token ~= "" and redis.call("HGET", task_key, "lease_token") ~= token then
        return false
    end
    if cutoff ~= "" then
        local score = redis.call("ZSCORE", lease, id)
        if not score or tonumber(score) > tonumber(cutoff) then
            return false
        end
    end
    if redis.call("LREM", active, -1, id) == 0 then
        return false
    end
    taken[id] = true
    return true
end

-- Drop the leases of IDs taken with fastq_unlist: one ZREM per 500.
local function fastq_unlease(lease, ids)
    fastq_bulk("ZREM", lease, ids)
end

-- Release one active task from the active list and its lease (fastq_unlist's checks); true
-- when it was released. The lease_token field is removed.
local function fastq_release(active, lease, id, task_key, token, cutoff)
    if not fastq_unlist(active, lease, id, task_key, token, cutoff, {}) then
        return false
    end
    redis.call("ZREM", lease, id)
    redis.call("HDEL", task_key, "lease_token")
    return true
end

-- Wake idle fastq workers of a queue when its pending list goes from empty to not empty
-- (they block on this channel instead of polling; Go clients do not publish, so workers
-- still poll every poll_interval). Busy queues publish nothing. Call with the pending key
-- and whether it was empty before the push.
local function fastq_notify(pending_key, was_empty)
    if was_empty and redis.call("LLEN", pending_key) > 0 then
        redis.call("PUBLISH", string.sub(pending_key, 1, -8) .. "fastq_notify", "1")
    end
end

-- Tell result waiters (fastq's TaskRef.result) which tasks of a queue reached a final state:
-- one message per script call on asynq:{q}:fastq_done (derived from the active key), the
-- state then the IDs, newline-separated. Nobody listening costs Redis one PUBLISH per call.
local function fastq_settled(active_key, state, ids)
    if #ids > 0 then
        redis.call("PUBLISH", string.sub(active_key, 1, -7) .. "fastq_done",
                   state .. "\n" .. table.concat(ids, "\n"))
    end
end

-- Free a uniqueness lock if this task still holds it.
local function fastq_unlock(unique_key, id)
    if unique_key ~= "" and redis.call("GET", unique_key) == id then
        redis.call("DEL", unique_key)
    end
end

-- Take up to n task IDs out of a container: a list's oldest ("list": the right end, where
-- dequeue takes from) or a zset's lowest scores (any other kind).
local function fastq_take(key, n, kind)
    if kind == "list" then
        return redis.call("RPOP", key, n) or {}
    end
    local ids = {}
    local popped = redis.call("ZPOPMIN", key, n)
    for i = 1, #popped, 2 do
        ids[#ids + 1] = popped[i]
    end
    return ids
end

-- Delete the archived tasks scored before ``cutoff`` and all but the newest ``size - 1``, with
-- their hashes (``prefix`` .. id), as Asynq v0.25+ does after each archive.
local function fastq_trim_archive(archived, prefix, cutoff, size)
    local old = redis.call("ZRANGE", archived, "-inf", cutoff, "BYSCORE")
    for _, id in ipairs(old) do
        redis.call("DEL", prefix .. id)
    end
    fastq_bulk("ZREM", archived, old)
    local excess = redis.call("ZRANGE", archived, 0, -tonumber(size))
    for _, id in ipairs(excess) do
        redis.call("DEL", prefix .. id)
    end
    fastq_bulk("ZREM", archived, excess)
end

-- A protobuf varint (a length prefix).
local function fastq_varint(n)
    local out = {}
    while n >= 128 do
        out[#out + 1] = string.char(n % 128 + 128)
        n = math.floor(n / 128)
    end
    out[#out + 1] = string.char(n)
    return table.concat(out)
end

-- Write a workflow task: pending, or scheduled when ``at`` is a time (a fastq_score argument;
-- "" none); its link (if not "") goes to its queue's links hash.
local function fastq_flow_put(task_key, pending, scheduled, links, id, msg, at, link)
    if at ~= "" then
        redis.call("HSET", task_key, "msg", msg, "state", "scheduled")
        redis.call("ZADD", scheduled, fastq_score(at), id)
    else
        redis.call("HSET", task_key, "msg", msg, "state", "pending", "pending_since", fastq_now_ns())
        local was_empty = redis.call("LLEN", pending) == 0
        redis.call("LPUSH", pending, id)
        fastq_notify(pending, was_empty)
    end
    if link ~= "" then
        redis.call("HSET", links, id, link)
    end
end

-- Create a workflow step from its template (HMGET of mh mt ph pt flow at): the TaskMessage is
-- mh (field 1, the type) .. field 2 (the payload: ph .. value .. pt) .. mt (fields 3 and up), the
-- bytes Go writes for the same message. Nothing is written when the task key exists already.
local function fastq_flow_create(task_key, pending, scheduled, links, id, t, value)
    if redis.call("EXISTS", task_key) == 1 then
        return
    end
    local payload = t[3] .. value .. t[4]
    local msg = t[1] .. "\18" .. fastq_varint(#payload) .. payload .. t[2]
    fastq_flow_put(task_key, pending, scheduled, links, id, msg, t[6] or "", t[5] or "")
end

-- Fail a chord that is still waiting, because member ``member_id`` will never succeed: the chord
-- becomes "failed"; its callback is written as an archived task whose error is ``reason`` (so it
-- shows in the archive, and a waiter on the chord learns it failed); its error callback, if any
-- (``eid`` not ""), is enqueued with ``member_json`` (the member's ID as JSON) as its first
-- argument. ``k``: the chord, the callback's task key, the callback queue's archived, then the
-- error callback's task key, pending, scheduled and links hash (flow_fail's KEYS[10..16]).
local function fastq_chord_fail(k, now, cb_id, reason, eid, member_json, member_id)
    if redis.call("HGET", k[1], "state") ~= "waiting" then
        return
    end
    redis.call("HSET", k[1], "state", "failed", "failed", member_id, "error", reason)
    if redis.call("EXISTS", k[2]) == 0 then
        local t = redis.call("HMGET", k[1], "mh", "mt", "ph", "pt")
        if t[1] then
            local payload = t[3] .. "null" .. t[4]
            -- fields 7 (error_msg) and 11 (last_failed_at) after the others: a valid message
            -- (protobuf readers accept any field order); Go writes it in order when it next saves it
            local msg = t[1] .. "\18" .. fastq_varint(#payload) .. payload .. t[2] ..
                ":" .. fastq_varint(#reason) .. reason .. "X" .. fastq_varint(tonumber(now))
            redis.call("HSET", k[2], "msg", msg, "state", "archived")
            redis.call("ZADD", k[3], now, cb_id)
            redis.call("PUBLISH", string.sub(k[3], 1, -9) .. "fastq_done", "archived\n" .. cb_id)
        end
    end
    if eid ~= "" then
        local e = redis.call("HMGET", k[1], "emh", "emt", "eph", "ept", "eflow", "eat")
        if e[1] then
            fastq_flow_create(k[4], k[5], k[6], k[7], eid, e, member_json)
        end
    end
    redis.call("EXPIRE", k[1], 86400)
end
