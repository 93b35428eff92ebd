-- adopt_runs: move runs that went to `default` for want of their workflow's
-- metadata to the workflow's queue, now that it is registered.
--
-- A client's run_by_name of a name it does not define, while Redis has no
-- metadata for it (Redis restarted empty and no supervisor synced again yet; a
-- client started before any supervisor), enqueues on `default` (enqueue_run.lua,
-- ARGV[18]): the run gets `queueFallback` = '1' and is listed in `fallback-runs`.
-- With no worker serving `default`, it waited there for ever. A supervisor that
-- (re-)registers workflows calls this for a while after (supervisor/duties/
-- registry.py): nothing per run in normal operation.
--
-- KEYS[1]  fallback-runs       (declared for routing; every other key is derived
--                               from the tag and shares its slot)
-- ARGV[1]  tag `{prefix}`
-- ARGV[2]  batch: the most entries read (a page)
-- ARGV[3]  offset: the rank the page starts at (the entries kept by earlier pages)
-- Reply: { runs moved, entries kept (their workflow has no metadata yet), entries read }
--
-- A listed run is moved when it is still queued or scheduled on `default`, still
-- says `queueFallback`, and its workflow's metadata names another queue: out of
-- default's ready (or scheduled) set into the same set of that queue, same score
-- (priority and order kept), its `queue` field set and `queueFallback` removed,
-- and its maxAttempts raised to its workflow's retries (`retriesJson`): enqueued
-- without metadata it got 1, and a transient error failed it for good.
-- A run parked behind max_concurrency (wf-waiting:<wf>) only has its field set:
-- its release reads it. A run whose workflow is registered on `default` keeps
-- its place. A run still marked that is running stays listed: a worker of another
-- app serving `default` claimed it to put it back (foreign.py held_after_loss), and
-- it comes back scheduled. Every entry but those kept leaves the list. A run put on `default`
-- by the caller (queue_override, or a workflow defined on it) is never listed.
local tag, index = ARGV[1], KEYS[1]
local batch = math.max(1, math.floor(tonumber(ARGV[2]) or 100))
local offset = math.max(0, math.floor(tonumber(ARGV[3]) or 0))
if redis.call('TYPE', index).ok ~= 'zset' then return { 0, 0, 0 } end
local ids = redis.call('ZRANGE', index, offset, offset + batch - 1)
local now = now_ms()
local queues = {}  -- workflow -> its registered queue, false: none
local attempts = {}  -- workflow -> the attempts its retries give a run (nil: unknown)
local readied = {}  -- queue -> the lowest ready score moved into it
local moved, kept = 0, 0

-- Move run `id` from `from` to `to` (sorted sets), same score: true when done
-- (or nothing to move), false when a key is of another type (left alone).
local function shift(id, from, to, scheduled, q)
  local score = redis.pcall('ZSCORE', from, id)
  if failed(score) then return false end
  if not score then return true end  -- parked, or claimed meanwhile: the field is enough
  if failed(redis.pcall('ZADD', to, score, id)) then return false end
  redis.call('ZREM', from, id)
  if scheduled then
    mark_due(tag, q, tonumber(score))
  elseif not readied[q] or tonumber(score) < tonumber(readied[q]) then
    readied[q] = score  -- listed and rung once per queue, below
  end
  return true
end

-- The retries of its workflow for run `run` (fields `f`), enqueued with 1 attempt
-- (no metadata to read): `n` attempts, unless a resume set its attempts since.
local function retries(run, f, n)
  if n and not f[6] and n > (tonumber(f[5]) or 1) then
    redis.call('HSET', run, 'maxAttempts', string.format('%d', n))
  end
end

for _, id in ipairs(ids) do
  local run = k_run(tag, id)
  local f = redis.pcall('HMGET', run, 'workflow', 'queue', 'status', 'queueFallback',
    'maxAttempts', 'attemptBudget')
  local keep = false
  if not failed(f) and f[4] == '1' and f[2] == 'default' and f[3] == 'running' then
    keep = true  -- claimed: a worker without its workflow puts it back (foreign.py)
  elseif not failed(f) and f[1] and f[4] == '1' and f[2] == 'default'
    and (f[3] == 'queued' or f[3] == 'scheduled') then
    local wf = f[1]
    local q = queues[wf]
    if q == nil then
      local m = redis.pcall('HMGET', k_wf(tag, wf), 'queue', 'retriesJson')
      q = not failed(m) and m[1] or false
      if q == '' then q = false end
      queues[wf] = q
      if q and m[2] then  -- its retries: what a run enqueued with the metadata got
        local ok, r = pcall(cjson.decode, m[2])
        local n = ok and type(r) == 'table' and tonumber(r.maxAttempts) or nil
        if n and n >= 1 and n <= 1e9 and n == math.floor(n) then attempts[wf] = n end
      end
    end
    if not q then
      keep = true  -- not registered (yet): a later call looks again
    elseif q ~= 'default' then
      local scheduled = f[3] == 'scheduled'
      local from, to
      if scheduled then
        from, to = k_scheduled(tag, 'default'), k_scheduled(tag, q)
      else
        from, to = k_ready(tag, 'default'), k_ready(tag, q)
      end
      if shift(id, from, to, scheduled, q) then
        redis.call('HSET', run, 'queue', q, 'updatedAt', ms(now))
        retries(run, f, attempts[wf])
        redis.call('HDEL', run, 'queueFallback')
        redis.pcall('SADD', tag .. ':queues', q)
        moved = moved + 1
      else
        keep = true  -- a key of another type (keycheck names it): left as it is
      end
    else
      redis.call('HDEL', run, 'queueFallback')  -- its workflow's queue is default
      retries(run, f, attempts[wf])
    end
  end
  if keep then kept = kept + 1 else redis.call('ZREM', index, id) end
end
-- A queue that got ready runs: its ready-queues bound, and one bell (the worker it
-- wakes rings again while work remains: claim_run.lua), as an enqueue burst does.
for q, score in pairs(readied) do
  mark_ready(tag, q, score)
  ring(tag, q)
end
return { moved, kept, #ids }
