-- flow_start: write a workflow (chain, group, chord): the templates of the steps that are
-- created later, the chord record, and the tasks that start now, each with its workflow link
-- (in the queue's links hash asynq:{q}:fastq_flow). Nothing is written when a key exists already.
-- KEYS[1] the chord record when ARGV[1] == "1"; then ARGV[2] template keys, then per task
--       (asynq:{q}:t:<id>, asynq:{q}:pending, asynq:{q}:scheduled, asynq:{q}:fastq_flow)
-- ARGV[1] "1" with a chord record, else "0"   ARGV[2] number of templates
-- then, with a chord record: the number of its fields * 2, then field, value, ...
-- then per template: mh, mt, ph, pt, flow, at (see fastq_flow_create)
-- then per task: id, TaskMessage, at ("" now; a fastq_score argument), link ("" none)
-- Returns {} when written, else {position of the first key that exists (1-based)}.
local first_task = tonumber(ARGV[2]) + (ARGV[1] == "1" and 1 or 0) + 1
for i = 1, #KEYS do
    if (i < first_task or (i - first_task) % 4 == 0) and redis.call("EXISTS", KEYS[i]) == 1 then
        return { i }
    end
end
local k = 1
local a = 3
if ARGV[1] == "1" then
    local n = tonumber(ARGV[a])
    redis.call("HSET", KEYS[1], unpack(ARGV, a + 1, a + n))
    a = a + n + 1
    k = 2
end
local templates = tonumber(ARGV[2])
for _ = 1, templates do
    redis.call("HSET", KEYS[k], "mh", ARGV[a], "mt", ARGV[a + 1], "ph", ARGV[a + 2], "pt", ARGV[a + 3],
               "flow", ARGV[a + 4], "at", ARGV[a + 5])
    k = k + 1
    a = a + 6
end
while a <= #ARGV do
    fastq_flow_put(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
    k = k + 4
    a = a + 4
end
return {}
