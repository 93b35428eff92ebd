-- reap_runs: put back runs whose worker vanished (claimed, but no live lease),
-- and release parked runs when their workflow has free slots (a raised
-- max_concurrency, or any missed wake-up).
--
-- KEYS[1]  queues (SET of known queues)
-- ARGV[1]  tag   ARGV[2]  batch size per queue
-- Reply: { released parked count, requeued id, ... }
-- Invariant: a run with a live lease is never touched; the lease is the only
-- proof of life (the supervisor extends it for children stuck in C code).
local tag = ARGV[1]
local batch = tonumber(ARGV[2])
local now = now_ms()
local out = { 0 }
for _, q in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local processing = k_processing(tag, q)
  local ids = redis.call('LRANGE', processing, -batch, -1)
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', k_lease(tag, id)) == 0 then
      local status = redis.call('HGET', k_run(tag, id), 'status')
      if status == 'running' then
        requeue(tag, id, 'lease expired (worker lost or cut off)', false, 0, now)
        out[#out + 1] = id
      else
        redis.call('LREM', processing, 1, id)
      end
    end
  end
end
local released = 0
for _, wf in ipairs(redis.call('SMEMBERS', tag .. ':parked')) do
  local free = wf_limit(tag, wf, nil) - redis.call('SCARD', k_running(tag, wf))
  if free > 0 then
    released = released + release_parked(tag, wf, math.min(free, batch))
  end
end
out[1] = released
return out
