-- replan_rate: a workflow's rate limit changed (raised, lowered or removed by a
-- sync): the runs waiting on a start reserved under the old limit go back to
-- their ready sets, so that their claims reserve again under the new one.
-- Kept, a raised or removed limit left a backlog waiting as long as the old one
-- had planned (10,000 runs under "100/m": 100 minutes).
--
-- KEYS[1]  rate:<wf> (ZSET: member "<runId>:<logged at>:<start>" -> start ms)
-- ARGV[1]  tag   ARGV[2]  workflow name   ARGV[3]  batch (log entries per call)
-- Reply: { runs put back, more (1 when a batch was full: call again) }
-- Invariants: only future entries are read (past starts stay in the window);
-- each goes, and its run is moved only if it is `scheduled` on that very
-- reservation (its rateSlot field): a run moved by something else meanwhile is
-- left alone. A run put back goes near the front of its priority band (its
-- createdAt), in the order the runs were first queued. Bounded by `batch`.
local tag = ARGV[1]
local wf = ARGV[2]
local batch = tonumber(ARGV[3])
local now = now_ms()
local key = KEYS[1]
local future = redis.pcall('ZRANGEBYSCORE', key, '(' .. int_str(now), '+inf', 'WITHSCORES',
  'LIMIT', 0, batch)
if failed(future) then return { 0, 0 } end  -- of another type: no reservation of ours
local moved = 0
local rung = {}
for i = 1, #future, 2 do
  local member = future[i]
  redis.call('ZREM', key, member)
  local id = string.match(member, '^(.-):%d+:%d+$')
  if id then
    local run = k_run(tag, id)
    local f = redis.pcall('HMGET', run, 'status', 'queue', 'rateSlot', 'priority', 'createdAt',
      'workflow')
    if not failed(f) and f[1] == 'scheduled' and f[2] and f[6] == wf
      and tonumber(f[3]) == tonumber(future[i + 1]) then
      local q = f[2]
      -- placed first (see `failed` in _lib.lua): a ready set of another type
      -- leaves the run on its reservation
      local score = ready_score(f[4], f[5])
      if not failed(redis.pcall('ZADD', k_ready(tag, q), score, id)) then
        mark_ready(tag, q, score)
        redis.call('ZREM', k_scheduled(tag, q), id)
        redis.call('HDEL', run, 'rateSlot')
        redis.call('HSET', run, 'status', 'queued', 'availableAt', ms(now), 'updatedAt', ms(now))
        move_status(tag, id, 'scheduled', 'queued', now)
        moved = moved + 1
        rung[q] = true
      end
    end
  end
end
for q in pairs(rung) do ring(tag, q) end
local more = 0
if #future >= 2 * batch then more = 1 end
return { moved, more }
