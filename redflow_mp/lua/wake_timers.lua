-- wake_timers: wake the suspended runs whose wake-up time (a sleep's end or a
-- wait's deadline) has come, in a bounded batch; and notify the next slice of
-- parents of a finished run awaited by more than its finish notified
-- (NOTIFY_SLICE, notify_waiters in _lib.lua), which finalize put in `timers`.
--
-- KEYS[1]  timers (ZSET runId -> wake-up time ms)
-- ARGV[1]  tag   ARGV[2]  batch size
-- Reply: { entries read, earliest remaining wake-up ms or -1, lateness ms of each
--          run woken, ... } (entries read == batch: call again)
-- Cost: one range read of the due entries plus their wakes, however many runs
-- sleep (a suspended run's wake-up is one ZSET member); at most `batch` runs
-- woken or parents notified per call (each parent of a finished run counts).
local tag = ARGV[1]
local batch = tonumber(ARGV[2])
local now = now_ms()
-- `timers` of another type (see `failed` in _lib.lua): nothing is due here; the
-- duty goes on with the other shards and the promotions (one broken key used to
-- fail the whole promoter tick), the supervisor's key check names the key.
local due = redis.pcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
if failed(due) then return { 0, -1 } end
local out = { #due / 2, -1 }
local budget = batch
for i = 1, #due, 2 do
  if budget <= 0 then
    out[1] = batch  -- entries left unread: call again
    break
  end
  local id = due[i]
  local late = now - tonumber(due[i + 1])
  redis.call('ZREM', KEYS[1], id)
  budget = budget - 1
  if wake(tag, id, now) then
    out[#out + 1] = late
  else
    local status = redis.pcall('HGET', k_run(tag, id), 'status')
    if type(status) == 'string' and TERMINAL[status] then
      -- its parents share this entry's budget (at least one is notified)
      local notified, woken = notify_waiters(tag, id, now, status, budget + 1)
      budget = budget + 1 - notified
      for _ = 1, woken do out[#out + 1] = late end
      if budget <= 0 then out[1] = batch end  -- (more of them may be left)
    end
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[1] then out[2] = tonumber(head[2]) end
return out
