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
local tag = ARGV[1]
local budget = tonumber(ARGV[2])
local qbatch = tonumber(ARGV[3])
local now = now_ms()
local promoted = 0
local more = 0
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
