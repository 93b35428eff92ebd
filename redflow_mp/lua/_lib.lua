-- _lib.lua: helpers shared by every script (scripts.py prepends this file).
--
-- Key names mirror redflow_mp/keys.py; every helper takes the hash tag
-- `{prefix}` (ARGV[1] of every script) so derived keys stay in one slot.
-- Times come from the server clock (TIME), never from the caller, so hosts
-- with skewed clocks agree on leases, due times and cron.
--
-- Run state transitions kept here so that the entry scripts (claim, finalize,
-- retry, requeue, cancel, reap, promote, cron) share one implementation:
--   enqueue            -> queued | scheduled
--   claim              queued -> running (lease taken, concurrency gate passed)
--   park               queued stays queued, moves to wf-waiting:<wf>
--   finalize           running -> succeeded | failed | canceled
--   retry              running -> queued | scheduled (attempt + 1)
--   requeue            running -> queued (worker gone; optional crash count)
-- Every function that acts for a lease holder is only called after the caller
-- checked the token (check_lease).

local BELL_CAP = 64
local TERMINAL = { succeeded = true, failed = true, canceled = true }

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function k_run(tag, id) return tag .. ':run:' .. id end
local function k_steps(tag, id) return tag .. ':run:' .. id .. ':steps' end
local function k_lease(tag, id) return tag .. ':run:' .. id .. ':lease' end
local function k_status(tag, status) return tag .. ':runs:status:' .. status end
local function k_ready(tag, q) return tag .. ':q:' .. q .. ':ready' end
local function k_processing(tag, q) return tag .. ':q:' .. q .. ':processing' end
local function k_scheduled(tag, q) return tag .. ':q:' .. q .. ':scheduled' end
local function k_bell(tag, q) return tag .. ':q:' .. q .. ':bell' end
local function k_wf(tag, wf) return tag .. ':workflow:' .. wf end
local function k_wf_runs(tag, wf) return tag .. ':workflow-runs:' .. wf end
local function k_running(tag, wf) return tag .. ':wf-running:' .. wf end
local function k_waiting(tag, wf) return tag .. ':wf-waiting:' .. wf end
local function k_idem(tag, wf, key)
  return tag .. ':idempo:' .. string.len(wf) .. ':' .. wf .. ':' .. string.len(key) .. ':' .. key
end

-- Wake one idle worker of `q`. The list is capped: bells only wake blocked
-- workers, busy ones claim straight from the ready list.
local function ring(tag, q)
  local bell = k_bell(tag, q)
  if redis.call('LLEN', bell) < BELL_CAP then
    redis.call('LPUSH', bell, '1')
  end
end

local function move_status(tag, id, old, new, now)
  if old and old ~= '' and old ~= new then
    redis.call('ZREM', k_status(tag, old), id)
  end
  redis.call('ZADD', k_status(tag, new), now, id)
end

local function check_lease(tag, id, token)
  return token ~= '' and redis.call('GET', k_lease(tag, id)) == token
end

-- The effective max_concurrency of a workflow: synced metadata wins, then the
-- value stored on the run at enqueue, then 1.
local function wf_limit(tag, wf, run_limit)
  local m = tonumber(redis.call('HGET', k_wf(tag, wf), 'maxConcurrency'))
    or tonumber(run_limit) or 1
  if m < 1 then m = 1 end
  return m
end

-- Move up to `n` parked runs of `wf` back to the front of their ready lists.
local function release_parked(tag, wf, n)
  local waiting = k_waiting(tag, wf)
  local released = 0
  local guard = 0
  while released < n and guard < n + 16 do
    guard = guard + 1
    local id = redis.call('LPOP', waiting)
    if not id then
      -- Nothing parked (the common case on every finish): leave `parked` alone;
      -- a stale member there only costs the reaper one empty LPOP.
      break
    end
    local f = redis.call('HMGET', k_run(tag, id), 'status', 'queue')
    if f[1] == 'queued' and f[2] then
      redis.call('RPUSH', k_ready(tag, f[2]), id)
      ring(tag, f[2])
      released = released + 1
    end
  end
  if released > 0 and redis.call('LLEN', waiting) == 0 then
    redis.call('SREM', tag .. ':parked', wf)
  end
  return released
end

-- Common exit from `running`: drop the claim, the lease and the concurrency
-- slot; a freed slot releases one parked run of the same workflow.
local function leave_running(tag, id, q, wf)
  if q then redis.call('LREM', k_processing(tag, q), 1, id) end
  redis.call('DEL', k_lease(tag, id))
  if wf and redis.call('SREM', k_running(tag, wf), id) == 1 then
    release_parked(tag, wf, 1)
  end
end

-- The message is the terminal status; for `succeeded` with an output under
-- 64 KiB it is "succeeded\n<outputJson>", so a waiting client needs no read.
local function publish_done(tag, id, status, output)
  local message = status
  if status == 'succeeded' and output and output ~= '' and string.len(output) < 65536 then
    message = status .. '\n' .. output
  end
  redis.call('PUBLISH', tag .. ':run-done:' .. id, message)
end

-- running|queued|scheduled -> terminal. `field` is 'outputJson' or 'errorJson'.
-- A run whose cancellation was requested always ends `canceled` (a succeeded
-- output is still stored for inspection).
local function finalize(tag, id, status, field, payload, now)
  local run = k_run(tag, id)
  local f = redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow',
    'cancelReason')
  local old = f[1]
  if not old or TERMINAL[old] then return old or '' end
  if f[2] and f[2] ~= '' and status ~= 'canceled' then
    if status == 'succeeded' and payload ~= '' then
      redis.call('HSET', run, 'outputJson', payload)
    end
    status = 'canceled'
    payload = ''
  end
  if status == 'canceled' and payload == '' then
    local reason = ''
    if f[5] and f[5] ~= '' then reason = ': ' .. f[5] end
    field = 'errorJson'
    payload = cjson.encode({ type = 'RunCanceledError', message = 'run was canceled' .. reason,
      retryable = false })
  end
  if payload ~= '' then
    redis.call('HSET', run, 'status', status, field, payload, 'finishedAt', now, 'updatedAt', now)
  else
    redis.call('HSET', run, 'status', status, 'finishedAt', now, 'updatedAt', now)
  end
  move_status(tag, id, old, status, now)
  if old == 'running' then
    leave_running(tag, id, f[3], f[4])
  else
    redis.call('DEL', k_lease(tag, id))
  end
  if field == 'outputJson' then
    publish_done(tag, id, status, payload)
  else
    publish_done(tag, id, status, nil)
  end
  return status
end

-- running -> queued (delay 0) or scheduled, attempt + 1.
local function retry(tag, id, error_json, delay_ms, now)
  local run = k_run(tag, id)
  local f = redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow', 'attempt')
  if f[2] and f[2] ~= '' then
    return finalize(tag, id, 'canceled', 'errorJson', '', now)
  end
  local q = f[3]
  local due = now + delay_ms
  local status = 'queued'
  if delay_ms > 0 then status = 'scheduled' end
  redis.call('HSET', run, 'status', status, 'attempt', (tonumber(f[5]) or 1) + 1,
    'availableAt', due, 'errorJson', error_json, 'updatedAt', now)
  move_status(tag, id, f[1], status, now)
  leave_running(tag, id, q, f[4])
  if status == 'scheduled' then
    redis.call('ZADD', k_scheduled(tag, q), due, id)
  else
    redis.call('LPUSH', k_ready(tag, q), id)
    ring(tag, q)
  end
  return status
end

-- running -> queued at the front of the ready list (worker gone or stopping).
-- With count_crash, the run's crash counter grows; at max_crashes it fails.
local function requeue(tag, id, cause, count_crash, max_crashes, now)
  local run = k_run(tag, id)
  local f = redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow',
    'crashCount')
  if f[1] ~= 'running' then return f[1] or '' end
  if f[2] and f[2] ~= '' then
    return finalize(tag, id, 'canceled', 'errorJson', '', now)
  end
  if count_crash then
    local crashes = (tonumber(f[5]) or 0) + 1
    redis.call('HSET', run, 'crashCount', crashes, 'lastCrash', cause)
    if crashes >= max_crashes then
      local msg = 'run killed its worker process ' .. crashes .. ' times (last: ' .. cause ..
        '); failing it instead of retrying (max_run_crashes=' .. max_crashes .. ')'
      return finalize(tag, id, 'failed', 'errorJson',
        cjson.encode({ type = 'RunCrashedError', message = msg, retryable = false }), now)
    end
  elseif cause ~= '' then
    redis.call('HSET', run, 'lastCrash', cause)
  end
  redis.call('HSET', run, 'status', 'queued', 'updatedAt', now)
  move_status(tag, id, 'running', 'queued', now)
  leave_running(tag, id, f[3], f[4])
  redis.call('RPUSH', k_ready(tag, f[3]), id)
  ring(tag, f[3])
  return 'queued'
end

-- Create a run (or return the existing one for its idempotency key / id).
-- a = { id, workflow, queue, input_json, max_attempts, run_at, idem_key, idem_ttl,
--       parent, cron_id, max_concurrency, timeout_ms, resend, add_queue }
-- Returns id, created (1 new | 0 existing), status.
local function enqueue(tag, a, now)
  local idem = nil
  if a.idem_key ~= '' then
    idem = k_idem(tag, a.workflow, a.idem_key)
    local existing = redis.call('GET', idem)
    -- A key whose run was already removed by retention no longer dedupes.
    if existing and redis.call('EXISTS', k_run(tag, existing)) == 1 then
      return existing, 0, ''
    end
  end
  local run = k_run(tag, a.id)
  -- A fresh id cannot exist; only a resend after a lost reply checks.
  if a.resend and redis.call('EXISTS', run) == 1 then return a.id, 0, '' end
  local status = 'queued'
  local due = now
  if a.run_at > now then
    status = 'scheduled'
    due = a.run_at
  end
  local fields = { 'id', a.id, 'workflow', a.workflow, 'queue', a.queue,
    'status', status, 'inputJson', a.input_json, 'attempt', 1,
    'maxAttempts', a.max_attempts, 'createdAt', now, 'availableAt', due, 'updatedAt', now }
  local optional = { idempotencyKey = a.idem_key, parentRunId = a.parent, cronId = a.cron_id,
    maxConcurrency = a.max_concurrency, timeoutMs = a.timeout_ms }
  for name, value in pairs(optional) do
    if value ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  redis.call('HSET', run, unpack(fields))
  redis.call('ZADD', tag .. ':runs:created', now, a.id)
  redis.call('ZADD', k_wf_runs(tag, a.workflow), now, a.id)
  redis.call('ZADD', k_status(tag, status), now, a.id)
  -- The set is append-only: a client adds each queue once, then skips this.
  if a.add_queue then redis.call('SADD', tag .. ':queues', a.queue) end
  if status == 'scheduled' then
    redis.call('ZADD', k_scheduled(tag, a.queue), due, a.id)
  else
    -- Ring only when the list was empty: the worker a bell wakes rings again
    -- while work remains (claim_run.lua), so a burst wakes every idle worker
    -- without a bell per run.
    if redis.call('LPUSH', k_ready(tag, a.queue), a.id) == 1 then
      ring(tag, a.queue)
    end
  end
  if idem then redis.call('SET', idem, a.id, 'PX', a.idem_ttl) end
  return a.id, 1, status
end

-- A ready-list entry whose run record is unusable fails with a clear error
-- instead of reaching a worker (whose reply parsing it would break) or being
-- dropped silently. A record with an unknown or missing status is reset to
-- `queued` first so that finalize applies (its index entry is dropped).
local KNOWN_STATUS = { scheduled = true, queued = true, running = true, succeeded = true,
  failed = true, canceled = true }

local function fail_corrupt(tag, id, processing, why, now)
  redis.call('LREM', processing, 1, id)
  local run = k_run(tag, id)
  local old = redis.call('HGET', run, 'status')
  if not old or not KNOWN_STATUS[old] then
    if old then redis.call('ZREM', k_status(tag, old), id) end
    redis.call('HSET', run, 'status', 'queued')
  end
  finalize(tag, id, 'failed', 'errorJson', cjson.encode({ type = 'CorruptRecord',
    message = 'run record is corrupted: ' .. why, retryable = false }), now)
  return nil
end

-- True when a stored integer field is present but not an integer.
local function bad_int(v)
  return v ~= nil and v ~= false and v ~= '' and not string.match(v, '^%d+$')
end

-- Take the run `id` that the caller just moved into `processing` of `q`:
-- check it, gate it on max_concurrency, lease it and mark it running.
-- Returns a reply table for a claimed run, or nil when the id was skipped
-- (stale, canceled, corrupted or parked).
-- Ids dropped by `take` because their run record is gone, reported to the caller
-- so that it can say so in its log.
local DROPPED = {}
local function take(tag, id, q, token, lease_ms, now)
  local run = k_run(tag, id)
  local processing = k_processing(tag, q)
  -- pcall: a foreign key of another type under the run's name must not fail the
  -- whole claim (WRONGTYPE); it is dropped like a missing hash.
  local f = redis.pcall('HMGET', run, 'status', 'workflow', 'cancelRequestedAt', 'maxConcurrency',
    'inputJson', 'attempt', 'maxAttempts', 'createdAt', 'parentRunId', 'timeoutMs', 'cronId',
    'startedAt', 'queue', 'availableAt')
  if f.err or not (f[1] or f[2] or f[5]) then
    -- Hash gone (a stale entry) or not a hash: drop the entry, never execute it.
    redis.call('LREM', processing, 1, id)
    DROPPED[#DROPPED + 1] = q .. ' ' .. id
    return nil
  end
  if not f[1] or not KNOWN_STATUS[f[1]] then
    return fail_corrupt(tag, id, processing, 'unknown status ' .. tostring(f[1] or '(none)'), now)
  end
  if f[1] ~= 'queued' then
    -- A run that is no longer queued (canceled, or a stale duplicate entry):
    -- drop the entry, never execute it.
    redis.call('LREM', processing, 1, id)
    return nil
  end
  local wf = f[2]
  if not wf or wf == '' or not f[5] then
    return fail_corrupt(tag, id, processing, 'missing its workflow or inputJson field', now)
  end
  local numeric = { attempt = f[6], maxAttempts = f[7], createdAt = f[8], timeoutMs = f[10],
    startedAt = f[12] }
  for name, value in pairs(numeric) do
    if bad_int(value) then
      return fail_corrupt(tag, id, processing, 'field ' .. name .. ' is not an integer', now)
    end
  end
  if f[3] and f[3] ~= '' then
    redis.call('LREM', processing, 1, id)
    finalize(tag, id, 'canceled', 'errorJson', '', now)
    return nil
  end
  local running = k_running(tag, wf)
  if redis.call('SCARD', running) >= wf_limit(tag, wf, f[4]) then
    redis.call('LREM', processing, 1, id)
    redis.call('RPUSH', k_waiting(tag, wf), id)
    redis.call('SADD', tag .. ':parked', wf)
    return nil
  end
  redis.call('SET', k_lease(tag, id), token, 'PX', lease_ms)
  redis.call('SADD', running, id)
  local started = f[12]
  if not started or started == '' then
    started = now
    redis.call('HSET', run, 'status', 'running', 'startedAt', now, 'updatedAt', now)
  else
    redis.call('HSET', run, 'status', 'running', 'updatedAt', now)
  end
  move_status(tag, id, 'queued', 'running', now)
  -- A run that never started has no steps: skip the read.
  local steps = {}
  if f[12] and f[12] ~= '' then steps = redis.call('HGETALL', k_steps(tag, id)) end
  return { id, wf, f[13] or q, f[5], f[6] or '1', f[7] or '1', f[8] or '0', f[9] or '',
    f[10] or '', f[11] or '', tostring(started), steps, f[14] or '' }
end
