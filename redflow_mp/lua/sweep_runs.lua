-- sweep_runs: retention. Remove finished runs (hash, steps, attempts, every index
-- entry, their idempotency key while it names them, their wait keys: awaited and
-- waiting sets, children set, unconsumed events) that finished more than the
-- retention period ago, in bounded batches.
--
-- KEYS[1]  runs:created
-- ARGV[1]  tag   ARGV[2]  retention ms (> 0)   ARGV[3]  batch size
-- Reply: number of runs removed (a full batch means: call again)
-- Invariant: an idempotency key never outlives the run it names.
-- Cost: bounded by the batch, not by the size of a run: a run's keys go by
-- UNLINK, so a big one (a steps hash of a run with a million steps) is freed
-- off the main thread instead of blocking Redis while DEL frees it.
local tag = ARGV[1]
local cutoff = now_ms() - tonumber(ARGV[2])
local batch = tonumber(ARGV[3])
local removed = 0
-- An index of the wrong type (see `failed` in _lib.lua) is skipped: retention of
-- the runs the others name goes on (one broken key used to stop it for all).
-- The runs that finished while it was broken are in runs:unindexed (move_status),
-- swept from there at the same age (a resumed one has left it; one that is not
-- finished is only dropped from it).
local unindexed = k_unindexed(tag)

-- Remove run `id` (its hash fields workflow, idempotencyKey in `f`) listed in `index`.
local function remove(id, index, f)
  if f[1] then
    redis.pcall('ZREM', k_wf_runs(tag, f[1]), id)
    if f[2] and f[2] ~= '' then
      local idem = k_idem(tag, f[1], f[2])
      if redis.pcall('GET', idem) == id then redis.call('DEL', idem) end
    end
  end
  redis.pcall('ZREM', KEYS[1], id)
  redis.call('ZREM', index, id)
  redis.pcall('ZREM', k_leases(tag), id)
  redis.pcall('ZREM', k_timers(tag), id)
  local evnames = k_evnames(tag, id)
  local names = redis.pcall('SMEMBERS', evnames)
  if failed(names) then names = {} end
  for _, name in ipairs(names) do
    redis.call('UNLINK', k_ev(tag, id, name))
  end
  redis.call('UNLINK', k_run(tag, id), k_steps(tag, id), evnames, k_awaits(tag, id),
    k_waiters(tag, id), k_children(tag, id), k_attempts(tag, id), k_kicked(tag, id))
end

local indexes = { k_status(tag, 'succeeded'), k_status(tag, 'failed'),
  k_status(tag, 'canceled'), unindexed }
for _, index in ipairs(indexes) do
  local ids = redis.pcall('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, batch - removed)
  if failed(ids) then ids = {} end
  for _, id in ipairs(ids) do
    local f = redis.pcall('HMGET', k_run(tag, id), 'workflow', 'idempotencyKey', 'status')
    if failed(f) then f = {} end
    if index == unindexed and f[3] and not TERMINAL[f[3]] then
      redis.call('ZREM', index, id)  -- not finished (any more): not retention's
    else
      remove(id, index, f)
      removed = removed + 1
    end
  end
  if removed >= batch then break end
end
return removed
