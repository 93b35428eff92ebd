-- promote_runs: move due members of the scheduled sets to their ready sets
-- (scheduled -> queued), in bounded batches, in time proportional to the due
-- work (never to the number of queues).
--
-- KEYS[1]  due-queues (ZSET queue -> earliest due time of its scheduled set; may
--          be early, never late)
-- ARGV[1]  tag   ARGV[2]  batch: scheduled entries read per call, over all its
--          queues   ARGV[3]  queues per call
-- Reply: { promoted count, earliest remaining due time ms or -1, more (1 when a
--          batch was full: call again) }
-- Cost: at most `batch` entries and `queues per call` queues, however many are
-- due (a per-queue batch let one call move queues x batch runs: 50,000 runs,
-- half a second of Redis, when 100 queues had 500 due each). A queue left with
-- due runs keeps its due score and comes first in the next call.
-- Invariant: after a queue is handled its due-queues score is the head of its
-- scheduled set, or it is removed when that set is empty. A promoted run goes
-- into its priority band at its due time.
-- A run scheduled at a clock more than CLOCK_BACK_MS ahead of this one
-- (runs:status:scheduled is scored by the time it was scheduled) was scheduled
-- while the Redis clock ran ahead and was set back since (NTP setting right a
-- clock that ran ahead, a failover to a server whose clock is behind): its due
-- time came from that clock, and a retry with a 10 s backoff at a clock a day
-- ahead waited a day and 10 s. Each is looked at once (its index entry is
-- scored now) before the due runs are read: a retry or defer (its `delayMs`,
-- written by retry in _lib.lua) is due its delay from now (never earlier than
-- its backoff, at most its backoff after the clock went back); so is a run on a
-- rate reservation (`rateSlot`, made when it was scheduled: its delay is the
-- slot less that time), and its claim checks the reservation against the starts
-- logged (rate_recheck in _lib_runs.lua: it starts, or reserves again); a run
-- enqueued with `run_at` keeps the user's time. The runs queued at such a clock
-- are placed at now in their band (below). Cost: one range read each of
-- runs:status:scheduled and runs:status:queued per call (empty but after a
-- jump), at most `batch` runs re-based per call (counted in its budget).
local tag = ARGV[1]
local budget = tonumber(ARGV[2])
local qbatch = tonumber(ARGV[3])
local now = now_ms()
local promoted = 0
local more = 0
local CLOCK_BACK_MS = 2000
local index = k_status(tag, 'scheduled')
local ahead = redis.pcall('ZRANGEBYSCORE', index, '(' .. int_str(now + CLOCK_BACK_MS), '+inf',
  'WITHSCORES', 'LIMIT', 0, budget)
if not failed(ahead) then  -- (of another type: named by the key check)
  for i = 1, #ahead, 2 do
    local id = ahead[i]
    redis.call('ZADD', index, 'XX', int_str(now), id)
    local f = redis.pcall('HMGET', k_run(tag, id), 'status', 'queue', 'availableAt', 'delayMs',
      'rateSlot')
    local at
    if not failed(f) and f[1] == 'scheduled' and f[2] then
      local slot, delay = finite(f[5]), finite(f[4])
      if slot then  -- reserved at its index score: the reservation's delay from now
        delay = slot - tonumber(ahead[i + 1])
        if delay < 0 then delay = 0 end
      end
      if delay and delay >= 0 then at = now + delay end
      local due = finite(f[3])
      if at and due and due > at then
        -- due-queues first: early is harmless there, late strands the queue
        if mark_due(tag, f[2], at) then
          local moved = redis.pcall('ZADD', k_scheduled(tag, f[2]), 'XX', 'CH', int_str(at), id)
          if moved == 1 then redis.call('HSET', k_run(tag, id), 'availableAt', int_str(at)) end
        end
      end
    end
  end
  budget = budget - #ahead / 2
end
-- The same look at runs:status:queued: a run queued at a clock more than
-- CLOCK_BACK_MS ahead (its ready or wf-waiting score is its priority band plus
-- that time) came after every run queued since in its band until the clock
-- caught up (on a queue that never empties, or a workflow always at its
-- max_concurrency, that long). It is placed at now in its band, in the ready
-- set or among the runs parked by max_concurrency, wherever it is.
local queued = k_status(tag, 'queued')
if budget > 0 then
  ahead = redis.pcall('ZRANGEBYSCORE', queued, '(' .. int_str(now + CLOCK_BACK_MS), '+inf',
    'LIMIT', 0, budget)
  if not failed(ahead) then  -- (of another type: named by the key check)
    for _, id in ipairs(ahead) do
      redis.call('ZADD', queued, 'XX', int_str(now), id)
      local f = redis.pcall('HMGET', k_run(tag, id), 'status', 'queue', 'priority', 'workflow')
      if not failed(f) and f[1] == 'queued' and f[2] then
        local score = ready_score(f[3], now)
        -- mark_ready first: a bound early is harmless, late hides the run
        mark_ready(tag, f[2], score)
        local moved = redis.pcall('ZADD', k_ready(tag, f[2]), 'XX', 'LT', 'CH', score, id)
        if (failed(moved) or moved == 0) and f[4] then
          redis.pcall('ZADD', k_waiting(tag, f[4]), 'XX', 'LT', score, id)
        end
      end
    end
    budget = budget - #ahead
  end
end
if budget <= 0 then
  budget, more = 1, 1  -- (more of them may be left; the due runs still go on)
end
local parks = {}  -- workflow -> parks_at_once, once per call
-- (no workflow has parked runs, the usual case: nothing parks, no field more read)
local any_parked = redis.call('EXISTS', tag .. ':parked') == 1
local queues = redis.pcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, qbatch)
if failed(queues) then refuse(KEYS[1], queues) end
if #queues >= qbatch then more = 1 end
for _, q in ipairs(queues) do
  if budget <= 0 then
    more = 1
    break
  end
  local sched = k_scheduled(tag, q)
  -- A scheduled or ready set of another type (see `failed` in _lib.lua): its
  -- runs stay scheduled and the queue is looked at again a minute later; the
  -- other queues go on.
  local later = false
  local due = redis.pcall('ZRANGEBYSCORE', sched, '-inf', now, 'WITHSCORES', 'LIMIT', 0, budget)
  if failed(due) then due, later = {}, true end
  if #due >= 2 * budget then more = 1 end
  budget = budget - #due / 2
  local moved, readied = 0, 0
  for i = 1, #due, 2 do
    local id = due[i]
    local run = k_run(tag, id)
    local f
    if any_parked then
      f = redis.pcall('HMGET', run, 'status', 'priority', 'workflow', 'maxConcurrency',
        'rateSlot')
    else
      f = redis.pcall('HMGET', run, 'status', 'priority')
    end
    if not failed(f) and f[1] == 'scheduled' then
      local score = ready_score(f[2], due[i + 1])
      -- A workflow at its limit with runs parked: parked at once (parks_at_once),
      -- not put in front of other workflows' runs for claims to park 32 a call.
      -- A run holding a rate reservation goes to ready (its claim gives it back).
      local wf = f[3]
      local park = false
      if any_parked and wf and not (f[5] and f[5] ~= '') then
        if parks[wf] == nil then parks[wf] = parks_at_once(tag, wf, f[4]) end
        park = parks[wf]
      end
      if park then
        redis.call('ZADD', k_waiting(tag, wf), score, id)
        redis.pcall('SADD', tag .. ':parked', wf)
      else
        -- placed first: a refused ready set leaves the run where it is
        if failed(redis.pcall('ZADD', k_ready(tag, q), score, id)) then
          later = true
          break
        end
        mark_ready(tag, q, score)
        readied = readied + 1
      end
      redis.call('HSET', run, 'status', 'queued', 'updatedAt', now)
      move_status(tag, id, 'scheduled', 'queued', now)
      moved = moved + 1
    end
    redis.call('ZREM', sched, id)
  end
  if readied > 0 then ring(tag, q) end
  promoted = promoted + moved
  if later then
    redis.call('ZADD', KEYS[1], int_str(now + 60000), q)
  else
    local head = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
    if head[1] then
      redis.call('ZADD', KEYS[1], head[2], q)
    else
      redis.call('ZREM', KEYS[1], q)
    end
  end
end
local earliest = -1
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[1] then earliest = tonumber(head[2]) end
return { promoted, earliest, more }
