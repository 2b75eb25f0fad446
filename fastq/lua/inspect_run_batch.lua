-- inspect_run_batch: move up to ARGV[2] tasks from a zset (scheduled, retry, archived or a
-- group) to pending, lowest score first; the caller loops (Asynq's runAll* do all at once).
-- KEYS[1] the zset   KEYS[2] asynq:{q}:pending   KEYS[3] asynq:{q}:groups
-- ARGV[1] asynq:{q}:t:   ARGV[2] batch size   ARGV[3] now in Unix ns
-- ARGV[4] group name when KEYS[1] is a group, else ""
-- Each task gets state pending and, unlike Asynq, pending_since. An emptied group leaves
-- KEYS[3]. Returns the number of tasks moved (0 when the zset is empty).
local ids = fastq_take(KEYS[1], tonumber(ARGV[2]), "zset")
for _, id in ipairs(ids) do
    redis.call("LPUSH", KEYS[2], id)
    redis.call("HSET", ARGV[1] .. id, "state", "pending", "pending_since", ARGV[3])
end
if ARGV[4] ~= "" and redis.call("EXISTS", KEYS[1]) == 0 then
    redis.call("SREM", KEYS[3], ARGV[4])
end
return #ids
