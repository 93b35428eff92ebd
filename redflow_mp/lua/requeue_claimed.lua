-- requeue_claimed: put back the runs a dead worker claimed with `token` before
-- it could publish them (it died between the claim's reply and its status
-- board). Found by their lease: only the claimer knows the token.
--
-- KEYS[1]  queues (SET of known queues)
-- ARGV[1]  tag   ARGV[2]  lease token of the claim in flight   ARGV[3]  cause
-- Reply: { id, status, ... } for each run found: `queued` when put back,
--        `canceled` when a cancel had been requested meanwhile
-- Invariant: bounded by the runs in `processing` lists (runs in flight), and
-- a run whose lease has another token is never touched.
local tag = ARGV[1]
local now = now_ms()
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  for _, id in ipairs(redis.call('LRANGE', k_processing(tag, q), 0, -1)) do
    if redis.call('GET', k_lease(tag, id)) == ARGV[2] then
      out[#out + 1] = id
      out[#out + 1] = requeue(tag, id, ARGV[3], false, 0, now)
    end
  end
end
return out
