#!lua flags=allow-oom
-- flow_gone: end the workflow of a step whose task is gone while its link is still stored: it
-- was deleted (Inspector, asynq CLI), settled by a worker that does not follow links (Go), or
-- revoked (RevokeTask). Nothing will follow the step, so its link is dropped and, for a chain,
-- the templates of its later steps are deleted; for a chord still waiting, the chord fails as in
-- flow_fail (callback archived with the reason, error callback enqueued with the member's ID).
-- The janitor finds such steps (HSCAN of the links hash, EXISTS of each task) and calls this
-- once per step; the check is repeated here, atomically, before anything is written.
-- KEYS[1] asynq:{q}:t:<id>   KEYS[2] asynq:{q}:fastq_flow
-- chain: KEYS[3..] the templates of the later steps
-- chord: KEYS[3] the chord   KEYS[4] the callback's task key   KEYS[5] the callback queue's archived
--        KEYS[6] the error callback's task key   KEYS[7] its pending   KEYS[8] its scheduled
--        KEYS[9] its fastq_flow
-- ARGV[1] task id   ARGV[2] the link as read   ARGV[3] "chain", "chord" or "" (a link that does
-- not parse: only dropped)   ARGV[4] now Unix s   ARGV[5] the callback's ID   ARGV[6] the error
-- text for the callback   ARGV[7] the error callback's ID or ""   ARGV[8] the member's ID as JSON
-- Returns 1 when the workflow was ended, 0 when the task exists or its link changed.
if redis.call("EXISTS", KEYS[1]) == 1 or redis.call("HGET", KEYS[2], ARGV[1]) ~= ARGV[2] then
    return 0
end
redis.call("HDEL", KEYS[2], ARGV[1])
if ARGV[3] == "chain" then
    for i = 3, #KEYS do
        redis.call("DEL", KEYS[i])
    end
elseif ARGV[3] == "chord" then
    fastq_chord_fail({ KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9] },
        ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[1])
end
return 1
