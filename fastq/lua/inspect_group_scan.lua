-- inspect_group_scan: one SSCAN step over a queue's groups with each group's size, so
-- listing or counting many groups never blocks Redis in one long loop (Asynq #1160).
-- KEYS[1] asynq:{q}:groups
-- ARGV[1] SSCAN cursor ("0" to start)   ARGV[2] COUNT hint (e.g. 1000)   ARGV[3] asynq:{q}:g:
-- Returns {next cursor, name1, size1, name2, size2, ...}; the cursor is "0" when done.
-- SSCAN may repeat a name across steps; the caller keeps the last size it saw.
local step = redis.call("SSCAN", KEYS[1], ARGV[1], "COUNT", ARGV[2])
local res = {step[1]}
for _, gname in ipairs(step[2]) do
    res[#res + 1] = gname
    res[#res + 1] = redis.call("ZCARD", ARGV[3] .. gname)
end
return res
