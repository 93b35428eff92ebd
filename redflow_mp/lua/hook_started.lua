-- hook_started: an `on_failure` hook starts; its entry in `on-failure-due`, if
-- any, is scored a deadline from now. The host's limit on a hook (60 s) counts
-- from its start, the entry's deadline from the failure: a hook started late
-- (its process held up after the failure: Redis trouble, a loaded machine, a
-- helper forked after other recoveries) was taken over while it still ran.
--
-- KEYS[1]  on-failure-due   KEYS[2]  run:<id>
-- ARGV[1]  run id   ARGV[2]  grace ms (the new deadline: now + grace)
-- Reply: the run's `doneToken` (the token of the failure whose hook starts,
--        for hook_done.lua; '' when none or refused)
-- Invariants: never adds an entry (XX); a key of another type fails nothing.
redis.pcall('ZADD', KEYS[1], 'XX', now_ms() + tonumber(ARGV[2]), ARGV[1])
local token = redis.pcall('HGET', KEYS[2], 'doneToken')
if failed(token) or not token then return '' end
return token
