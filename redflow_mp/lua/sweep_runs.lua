-- sweep_runs: retention. Remove finished runs (hash, steps, lease, every index
-- entry) that finished more than the retention period ago, in bounded batches.
--
-- KEYS[1]  runs:created
-- ARGV[1]  tag   ARGV[2]  retention ms (> 0)   ARGV[3]  batch size
-- Reply: number of runs removed (a full batch means: call again)
local tag = ARGV[1]
local cutoff = now_ms() - tonumber(ARGV[2])
local batch = tonumber(ARGV[3])
local removed = 0
for status, _ in pairs(TERMINAL) do
  local index = k_status(tag, status)
  local ids = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, batch - removed)
  for _, id in ipairs(ids) do
    local wf = redis.call('HGET', k_run(tag, id), 'workflow')
    if wf then redis.call('ZREM', k_wf_runs(tag, wf), id) end
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', index, id)
    redis.call('DEL', k_run(tag, id), k_steps(tag, id), k_lease(tag, id))
    removed = removed + 1
  end
  if removed >= batch then break end
end
return removed
