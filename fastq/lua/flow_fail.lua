#!lua flags=allow-oom
-- flow_fail: archive one workflow step (retries used up, or a failure that is not retried)
-- and end its workflow in the same script. A chain: the templates of its later steps are
-- deleted (nothing after a failed step runs). A chord (still waiting): it becomes "failed";
-- its callback is written as an archived task whose error names the member (so it shows in
-- the archive and a waiter on the chord learns it failed), and its error callback, if any, is
-- enqueued with the failed member's ID as its first argument.
-- KEYS[1] asynq:{q}:active   KEYS[2] asynq:{q}:lease   KEYS[3] asynq:{q}:archived
-- KEYS[4] processed:<date>   KEYS[5] failed:<date>   KEYS[6] processed   KEYS[7] failed
-- KEYS[8] asynq:{q}:t:<id>   KEYS[9] asynq:{q}:fastq_flow
-- chain: KEYS[10..] the templates of the later steps
-- chord: KEYS[10] the chord   KEYS[11] the callback's task key   KEYS[12] the callback queue's archived
--        KEYS[13] the error callback's task key   KEYS[14] its pending   KEYS[15] its scheduled
--        KEYS[16] its fastq_flow
-- ARGV[1] daily-stats expire-at   ARGV[2] task id   ARGV[3] lease token   ARGV[4] lease cutoff or ""
-- ARGV[5] now Unix s   ARGV[6] TaskMessage with error_msg/last_failed_at   ARGV[7] "chain" or "chord"
-- ARGV[8] the callback's ID   ARGV[9] the callback's error text   ARGV[10] the error callback's ID or ""
-- ARGV[11] the failed member's ID as a JSON string   ARGV[12] asynq:{q}:t:   ARGV[13] archive cutoff
-- Unix s (now - 90 days)   ARGV[14] max archive size (the archive is trimmed as archive.lua does)
-- Returns {} when settled, {id} when the task is no longer held with that token.
local id = ARGV[2]
if not fastq_release(KEYS[1], KEYS[2], id, KEYS[8], ARGV[3], ARGV[4]) then
    return { id }
end
redis.call("ZADD", KEYS[3], ARGV[5], id)
redis.call("HSET", KEYS[8], "msg", ARGV[6], "state", "archived")
fastq_trim_archive(KEYS[3], ARGV[12], ARGV[13], ARGV[14])
fastq_incr_daily(KEYS[4], 1, ARGV[1])
fastq_incr_daily(KEYS[5], 1, ARGV[1])
fastq_incr_total(KEYS[6], 1)
fastq_incr_total(KEYS[7], 1)
redis.call("HDEL", KEYS[9], id)

if ARGV[7] == "chain" then
    for i = 10, #KEYS do
        redis.call("DEL", KEYS[i])
    end
elseif ARGV[7] == "chord" then
    fastq_chord_fail({ KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16] },
        ARGV[5], ARGV[8], ARGV[9], ARGV[10], ARGV[11], id)
end
fastq_settled(KEYS[1], "archived", { id })
return {}
