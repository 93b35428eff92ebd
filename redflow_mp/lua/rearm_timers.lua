-- rearm_timers: suspended runs whose wake-up time (a sleep's end, a wait's
-- deadline) is in their `wait` record but not in `timers` get it back. Only a
-- key Redis lost (`timers` evicted under an evicting maxmemory-policy, or
-- deleted) leaves such a run: suspend_run writes both in one call and
-- wake_timers removes the entry as it wakes the run, so without this it slept
-- for good. A run already due wakes at the waker's next tick.
--
-- KEYS[1]  timers (ZSET runId -> wake-up time ms)
-- ARGV[1]  tag   ARGV[2 ..] run ids (a page of runs:status:suspended)
-- Reply: { run id re-armed, ... }
-- Cost: one HMGET and one ZSCORE per id given.
local tag = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local f = redis.pcall('HMGET', k_run(tag, id), 'status', 'wait')
  if not failed(f) and f[1] == 'suspended' and f[2] then
    local ok, wait = pcall(cjson.decode, f[2])
    local at = ok and type(wait) == 'table' and tonumber(wait.wakeAt)
    if at and redis.pcall('ZSCORE', KEYS[1], id) == false then
      if not failed(redis.pcall('ZADD', KEYS[1], int_str(at), id)) then
        out[#out + 1] = id
      end
    end
  end
end
return out
