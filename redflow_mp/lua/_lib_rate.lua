-- _lib_rate.lua: the rate gate of a claim (after _lib.lua and _lib_retry.lua, before
-- _lib_runs.lua, whose `take` calls it; luafiles.py joins the helper files in order).

-- The rate gate: rate_gate() makes its helpers (below) and returns its two entry points.
-- An EVALSHA makes every helper of its text anew on each call (luasrc.py), and a claim
-- needs these only for a workflow with a rate limit or a run with a reservation: made
-- up front they were 9,000 of the 360,000 redis-server instructions of a steady-state
-- claim_run (docs/benchmarks.md, "Claim and finish, stop 38"). The function library (whose
-- locals outlive a call) makes them once: RATE_GATE keeps them (none holds per-call state).
local RATE_GATE = nil
local function rate_gate()
  if RATE_GATE then return RATE_GATE[1], RATE_GATE[2] end
  -- Rate limit of a workflow (its synced `rateLimit`, "<count>/<s|m|h>"; see
  -- redflow_mp/ratelimit.py): no window of one period holds more than `count`
  -- actual starts of its runs. Two logs, both ZSETs trimmed to one period:
  --   rate-started:<wf>  the actual starts (member per start, score = the claim's
  --     `now`, the run's startedAt): only ever added at `now`, so "fewer than
  --     `count` entries after now - period" is exactly "a start now keeps every
  --     window within the limit" (the window's last start made that check).
  --   rate:<wf>  the plan: the actual starts plus the starts reserved for runs
  --     waiting over the limit ("<id>:<logged at>:<start>" -> start). A run over
  --     the limit gets the next free start of the plan instead of polling for one.
  -- A claim of a run with no reservation starts it when the plan holds fewer than `count` entries
  -- after now - period (past and reserved: so it never starts ahead of runs already waiting, and
  -- the started log, a subset of the plan there, has room too), else reserves max(now, the count-th
  -- latest entry + period). A reserved run comes back late (the promoter's tick, busy workers): its
  -- claim drops its planned entry and checks the started log; with room it starts (logged at now in
  -- both), else it reserves again at the earliest time that log allows (rate_recheck). The plan's
  -- reserved entries are not counted there: they are not starts, and counting the ones already due
  -- made every run of a promoted batch but the last fail (docs/internals.md, "Rate limits").
  local RATE_PERIODS = { s = 1000, m = 60000, h = 3600000 }

  -- `spec`: the workflow's rateLimit if read already (false = none), nil: read
  -- here. Returns count, period (ms), or nil: no limit.
  local function rate_spec(tag, wf, spec)
    if spec == nil then spec = redis.call('HGET', k_wf(tag, wf), 'rateLimit') end
    if not spec or spec == '' then return nil end
    local count, unit = string.match(spec, '^(%d+)/([smh])$')
    count = tonumber(count)
    if not count or count < 1 then return nil end
    return count, RATE_PERIODS[unit]
  end

  -- Both logs trimmed to the window ending at `now`: true, or false, key, error when one is of
  -- another type (nothing written then). A start logged more than RATE_CLOCK_BACK_MS after `now`
  -- means the Redis clock went back (a server that ran ahead set right by NTP, a failover to one
  -- whose clock is behind): the entries logged after now in both logs go (O(log n) to look, once
  -- per jump to drop). Kept, they filled the window until the real time caught up with them, and
  -- every run of the workflow was reserved that far ahead: a clock a day ahead stopped a "2/s"
  -- workflow for a day. (A run already reserved while the clock was ahead keeps its reservation, as
  -- a scheduled run keeps its time.) A smaller jump (a failover to a clock some ms behind, an NTP
  -- step) leaves them: dropped, they let starts past the limit (a second start in the hour of a
  -- "1/h" workflow); kept, the next start waits that much longer.
  local RATE_CLOCK_BACK_MS = 1000
  local function rate_trim(tag, wf, now, period)
    for _, key in ipairs({ k_rate(tag, wf), k_rate_started(tag, wf) }) do
      local r = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', int_str(now - period))
      if failed(r) then return false, key, r end
    end
    local started = k_rate_started(tag, wf)
    local last = redis.call('ZRANGE', started, -1, -1, 'WITHSCORES')
    if last[2] and tonumber(last[2]) > now + RATE_CLOCK_BACK_MS then
      local after = '(' .. int_str(now)
      redis.call('ZREMRANGEBYSCORE', started, after, '+inf')
      redis.call('ZREMRANGEBYSCORE', k_rate(tag, wf), after, '+inf')
    end
    return true
  end

  -- Log start `slot` of run `id` in the plan (and in the started log when it is
  -- `now`); each key expires a period after its last entry.
  local function rate_log(tag, wf, id, now, slot, period)
    local key = k_rate(tag, wf)
    redis.call('ZADD', key, int_str(slot), id .. ':' .. int_str(now) .. ':' .. int_str(slot))
    local last = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) or slot
    redis.call('PEXPIRE', key, int_str(last - now + period + 1))
    if slot > now then return end
    local started = k_rate_started(tag, wf)
    redis.call('ZADD', started, int_str(now), id .. ':' .. int_str(now))
    redis.call('PEXPIRE', started, int_str(period + 1))
  end

  -- The planned entry of run `id` at `slot` (its rateSlot field) goes.
  local function rate_forget(tag, wf, id, slot)
    local at = tonumber(slot)
    if not at then return end
    local key = k_rate(tag, wf)
    local near = redis.pcall('ZRANGEBYSCORE', key, int_str(at), int_str(at))
    if failed(near) then return end  -- of another type: it holds no entry of this run
    for _, m in ipairs(near) do  -- "<id>:<logged at>:<start>" (rate_log)
      if string.match(m, '^(.-):%d+:%d+$') == id then redis.call('ZREM', key, m) end
    end
  end

  -- A run with no reservation: nil when it starts now (logged), else the ms it is
  -- reserved for; nil, key, error: a log of another type (nothing written).
  local function rate_slot(tag, wf, id, now, spec)
    local count, period = rate_spec(tag, wf, spec)
    if not count then return nil end
    local ok, key, e = rate_trim(tag, wf, now, period)
    if not ok then return nil, key, e end
    local plan = k_rate(tag, wf)
    local logged = redis.call('ZCARD', plan)
    local slot = now
    if logged >= count then
      local nth = redis.call('ZRANGE', plan, logged - count, logged - count, 'WITHSCORES')
      local at = tonumber(nth[2]) + period
      if at > slot then slot = at end
    end
    rate_log(tag, wf, id, now, slot, period)
    if slot <= now then return nil end
    return slot
  end

  -- A run back on its reservation (`reserved`, its rateSlot field), at `now` (at or after it): its
  -- planned entry goes; it starts now when the started log holds fewer than `count` starts after
  -- now - period, else it reserves again at the earliest time that log allows (its (n - count +
  -- 1)-th latest start + period: later than now, near its old place, not behind the whole backlog).
  -- Replies as rate_slot. O(log n) in the logs' sizes: no walk over the window.
  local function rate_recheck(tag, wf, id, reserved, now, spec)
    local count, period = rate_spec(tag, wf, spec)
    if not count then return nil end  -- the limit was removed (replan_rate follows)
    local ok, key, e = rate_trim(tag, wf, now, period)
    if not ok then return nil, key, e end
    rate_forget(tag, wf, id, reserved)
    local started = k_rate_started(tag, wf)
    local n = redis.call('ZCARD', started)  -- all at or before now: starts only
    local slot = now
    if n >= count then
      local plan = k_rate(tag, wf)
      local function nth(i)
        return tonumber(redis.call('ZRANGE', started, i, i, 'WITHSCORES')[2]) + period
      end
      -- competitors: runs due already, not started (plan minus started, up to now),
      -- and runs reserved up to the first start this log allows
      local due = redis.call('ZCOUNT', plan, '-inf', int_str(now)) - n
      if due < 0 then due = 0 end  -- a start the plan lost (a hand edit): none due
      local first = nth(n - count)
      local ahead = due + redis.call('ZCOUNT', plan, '(' .. int_str(now), int_str(first))
      if n - count + ahead < n then
        slot = nth(n - count + ahead)
      else
        local logged = redis.call('ZCARD', plan)
        slot = tonumber(redis.call('ZRANGE', plan, logged - count, logged - count, 'WITHSCORES')[2])
          + period
        if slot < first then slot = first end
      end
    end
    rate_log(tag, wf, id, now, slot, period)
    if slot <= now then return nil end
    return slot
  end

  -- The claim's rate gate for queued run `id` of `wf` on queue `q`: true when the run was moved to
  -- `scheduled` until its reserved start (the promoter brings it back then; it waits without a
  -- process and without Redis traffic). A run that comes back with its reservation (`reserved`, its
  -- rateSlot field) is checked against the actual starts (rate_recheck). false, key, error: a key
  -- it needs (a rate log, the scheduled set, due-queues) is of another type; the run was not moved.
  local function rate_deferred(tag, id, wf, q, reserved, now, spec)
    local slot, bad, e
    if reserved and reserved ~= '' then
      redis.call('HDEL', k_run(tag, id), 'rateSlot')
      slot, bad, e = rate_recheck(tag, wf, id, reserved, now, spec)
    else
      slot, bad, e = rate_slot(tag, wf, id, now, spec)
    end
    if bad then return false, bad, e end
    if not slot then return false end
    local sched = k_scheduled(tag, q)
    e = redis.pcall('ZADD', sched, slot, id)  -- placed first (see `failed`)
    if failed(e) then return false, sched, e end
    if not mark_due(tag, q, slot) then
      redis.call('ZREM', sched, id)
      return false, k_due_queues(tag), 'WRONGTYPE'
    end
    redis.call('HSET', k_run(tag, id), 'status', 'scheduled', 'availableAt', slot,
      'rateSlot', slot, 'updatedAt', now)
    move_status(tag, id, 'queued', 'scheduled', now)
    return true
  end

  -- A run that came back on its reservation (`slot`, its rateSlot field) but was parked by the
  -- concurrency gate gives the reservation back: its log entry and field go, and its release takes
  -- a new start. Kept, it let the run start at its release on a start logged in the past, outside
  -- the window: parked runs released one after another (each by the finish of the one before) all
  -- started at once, over the limit.
  local function rate_unreserve(tag, wf, id, slot)
    redis.call('HDEL', k_run(tag, id), 'rateSlot')
    rate_forget(tag, wf, id, slot)
  end
  RATE_GATE = { rate_deferred, rate_unreserve }
  return rate_deferred, rate_unreserve
end
