#!lua flags=allow-oom
-- extend_lease: push the lease of running tasks of one queue to now + lease seconds
-- (Redis server time). Never creates a lease (XX) and never shortens one (GT).
-- KEYS[1] asynq:{q}:lease   ARGV[1] lease seconds   ARGV[2..] task ids
-- Returns the new expiry (Unix s).
local expiry = fastq_now() + tonumber(ARGV[1])
local members = {}
for i = 2, #ARGV do
    members[#members + 1] = expiry
    members[#members + 1] = ARGV[i]
end
if #members > 0 then
    fastq_bulk("ZADD", KEYS[1], members, "XX", "GT")
end
return expiry
