-- fire_cron: the leader enqueues the run of one due cron fire time and stores
-- the next fire time, atomically.
--
-- KEYS[1]  lock:cron
-- ARGV[1]  tag   ARGV[2]  leader token   ARGV[3]  cron id
-- ARGV[4]  fire time ms (the cron:next score the leader read)
-- ARGV[5]  next fire time ms
-- ARGV[6]  run id   ARGV[7]  workflow   ARGV[8]  queue   ARGV[9]  inputJson
-- ARGV[10] maxAttempts   ARGV[11] idempotency key (deterministic per cron id and
-- fire time)   ARGV[12] idempotency TTL ms (from the run's creation, applied once it
-- finished: a short one keeps a frequent cron's keys few)   ARGV[13] maxConcurrency
-- ARGV[14] timeoutMs   ARGV[15] priority 0..9 (the workflow's; '' = 0)
-- ARGV[16] SHA1 hex of the cron:def value the leader read ('' = not checked)
-- Reply: { code, run id }: 1 enqueued, 2 skipped (workflow at max_concurrency),
--   3 already enqueued for this fire time, 4 skipped (the run of this entry's
--   previous fire, the run id replied, has not started yet), -1 not the leader,
--   -2 fire time already handled (cron:next moved on), -3 the definition was
--   replaced since the leader read it (a registry sync: nothing written; the next
--   tick reads the new one)
-- Invariants: a fire time creates at most one run, even across a leader change
-- (the idempotency key), and only the lock holder advances the schedule. An
-- entry has at most one run waiting to start (cron:last): with every worker busy
-- elsewhere, a frequent cron's runs would otherwise pile up without bound.
-- A skipped fire time (replies 2 and 4) is kept in cron:skipped, one field per
-- entry overwritten by the next skip: the rewind after the Redis clock went back
-- (rewind_crons.lua) does not move the entry back to it and fire it late.
local tag = ARGV[1]
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return { -1, '' } end
local next_key = tag .. ':cron:next'
local score = redis.call('ZSCORE', next_key, ARGV[3])
-- Whole ms, rounded down as the leader read it (_finite_ms in upkeep_scripts.py):
-- a score with a fraction (written by hand: `time.time() * 1000`) compared
-- exactly was "already handled" at every tick and never moved on.
if not score or math.floor(tonumber(score)) ~= tonumber(ARGV[4]) then return { -2, '' } end
-- A sync that replaced the entry after the leader's read may leave the same fire
-- time due (its new schedule has it, swap_crons.lua; or only the input or queue
-- changed): the old input, queue and schedule are not fired.
if (ARGV[16] or '') ~= '' then
  local def = redis.call('HGET', tag .. ':cron:def', ARGV[3])
  if not def or redis.sha1hex(def) ~= ARGV[16] then return { -3, '' } end
end
local now = now_ms()
redis.call('ZADD', next_key, ARGV[5], ARGV[3])
local wf = ARGV[7]
-- pcall: a cron:skipped of another type (a neighbour's key) must not stop the
-- schedule; it only loses the record (the key check duty names it).
local function skipped()
  redis.pcall('HSET', tag .. ':cron:skipped', ARGV[3], ARGV[4])
end
if redis.call('SCARD', k_running(tag, wf)) >= wf_limit(tag, wf, ARGV[13]) then
  skipped()
  return { 2, '' }
end
-- pcall: a cron:last of another type (a neighbour's key) must not stop the
-- schedule; it only loses the check (the key check duty names it).
local last_key = tag .. ':cron:last'
local prev = redis.pcall('HGET', last_key, ARGV[3])
if type(prev) == 'string' then
  local st = redis.pcall('HGET', k_run(tag, prev), 'status')
  -- the previous run is this fire time's own (its cron:next score written back
  -- to it, a leader change over a stale schedule): enqueue replies 3 below
  if (st == 'queued' or st == 'scheduled')
    and redis.pcall('HGET', k_run(tag, prev), 'idempotencyKey') ~= ARGV[11] then
    skipped()
    return { 4, prev }
  end
end
-- One run, now, no parent, with the cron id: written as enqueue_runs.lua writes
-- each of its runs (and enqueue_run.lua a run of these options).
local priority = math.floor(tonumber(ARGV[15]) or 0)
if priority < 0 or priority > 9 then priority = 0 end
local p = enqueue_plan(tag, {
  workflow = wf, queue = ARGV[8], max_attempts = ARGV[10], run_at = 0,
  idem_ttl = ARGV[12], parent = '', cron_id = ARGV[3], max_concurrency = ARGV[13],
  timeout_ms = ARGV[14], priority = priority,
}, now)
local id, created = enqueue_one(p, ARGV[6], ARGV[9], ARGV[11])
enqueue_flush(p)
if created == 1 then
  redis.pcall('HSET', last_key, ARGV[3], id)
  return { 1, id }
end
return { 3, id }
