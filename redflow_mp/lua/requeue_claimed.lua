-- requeue_claimed: put back the runs a dead worker claimed with `token` before
-- it could publish them (it died between the claim's reply and its status
-- board). Found by their lease token: only the claimer knows it.
--
-- KEYS[1]  runs:status:running
-- ARGV[1]  tag   ARGV[2]  lease token of the claim in flight   ARGV[3]  cause
-- ARGV[4]  lease ms (a claim older than two leases is the reaper's)
-- Reply: { id, status, ... } for each run found: `queued` when put back,
--        `canceled` when a cancel had been requested meanwhile
-- Invariant: reads only the runs that entered `running` in the last two
-- leases, newest first, at most 1,000 (bounded by the runs in flight; called
-- only when a worker dies); a run whose lease has another token is never
-- touched.
local tag = ARGV[1]
local now = now_ms()
local since = now - 2 * tonumber(ARGV[4])
local out = {}
local requeue = retry_helpers().requeue  -- (_lib_retry.lua: made on first use)
local recent = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', since, 'LIMIT', 0, 1000)
for _, id in ipairs(recent) do
  if redis.call('HGET', k_run(tag, id), 'lease') == ARGV[2] then
    out[#out + 1] = id
    out[#out + 1] = requeue(tag, id, ARGV[3], false, 0, now, '')
  end
end
return out
