-- inspect_delete_batch: delete up to ARGV[2] tasks from one container; the caller loops,
-- so deleting 100k tasks never blocks Redis in one script (Asynq's deleteAll* do all at once).
-- KEYS[1] the container: asynq:{q}:pending (list) or a zset (scheduled, retry, archived,
--   completed, g:<group>)   KEYS[2] asynq:{q}:groups
-- ARGV[1] asynq:{q}:t:   ARGV[2] batch size   ARGV[3] "list" or "zset"
-- ARGV[4] group name when KEYS[1] is a group, else ""
-- Pending tasks are taken oldest first (right end), zset members lowest score first. Each
-- task's uniqueness lock is freed if it holds it (also for pending, which Asynq forgets);
-- an emptied group leaves KEYS[2].
-- Returns the number of tasks deleted (0 when the container is empty).
local n = tonumber(ARGV[2])
local ids = fastq_take(KEYS[1], n, ARGV[3])
for _, id in ipairs(ids) do
    local key = ARGV[1] .. id
    fastq_unlock(redis.call("HGET", key, "unique_key") or "", id)
    redis.call("DEL", key)
end
if ARGV[4] ~= "" and redis.call("EXISTS", KEYS[1]) == 0 then
    redis.call("SREM", KEYS[2], ARGV[4])
end
return #ids
