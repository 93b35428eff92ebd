-- wake_timers: wake the suspended runs whose wake-up time (a sleep's end or a
-- wait's deadline) has come, in a bounded batch; and notify the next slice of
-- parents of a finished run awaited by more than its finish notified
-- (NOTIFY_SLICE, notify_waiters in _lib.lua), which finalize put in `timers`.
--
-- KEYS[1]  timers (ZSET runId -> wake-up time ms)
-- ARGV[1]  tag   ARGV[2]  batch size
-- Reply: { entries read, earliest remaining wake-up ms or -1, lateness ms of each
--          run woken, ... } (entries read == batch: call again; the runs woken
--          because the clock went back, below, are read but not late)
-- A run that suspended at a clock more than CLOCK_BACK_MS ahead of this one
-- (runs:status:suspended is scored by the suspend's time) suspended while the
-- Redis clock ran ahead and was set back since (NTP setting right a clock that
-- ran ahead, a failover to a server whose clock is behind): its wake-up time
-- came from that clock, and a sleep(60) at a clock a day ahead slept a day and a
-- minute. It is woken with what budget is left: its replay re-bases each
-- relative wait (sleep(seconds), a wait's timeout) whose start lies after now
-- on the clock now (WaitBase._rebased in waitbase.py: at most its duration from
-- now, never earlier than it was due), and suspends again; absolute ones
-- (sleep_until) keep their time.
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
local wake, notify_waiters = nil, nil  -- (_lib.lua: made on first use; not by an idle call)
if #due > 0 then
  local helpers = exit_helpers()
  wake, notify_waiters = helpers.wake, helpers.notify_waiters
end
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
local CLOCK_BACK_MS = 2000
if budget > 0 then
  local index = k_status(tag, 'suspended')
  local ahead = redis.pcall('ZRANGEBYSCORE', index, '(' .. int_str(now + CLOCK_BACK_MS), '+inf',
    'LIMIT', 0, budget)
  if not failed(ahead) then  -- (of another type: named by the key check)
    for _, id in ipairs(ahead) do
      -- looked at once: a run that does not wake (not suspended: a stale entry;
      -- its ready set of another type: its timer tries again) is not found again
      redis.call('ZADD', index, 'XX', int_str(now), id)
      exit_helpers().wake(tag, id, now)
    end
    if #ahead >= budget then out[1] = batch end  -- (more of them may be left)
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[1] then out[2] = tonumber(head[2]) end
return out
