-- _lib_runs.lua: the second half of the helpers shared by every script (after
-- _lib.lua, whose names it uses; scripts.py prepends both, in this order):
-- enqueue, the checks of a claimed run's record, the rate gate and `take`.

-- Create runs (or return the existing one for an idempotency key / id), many of
-- one workflow in one call (enqueue_runs.lua, and fire_cron.lua's one run) as
-- cheaply as possible, in three parts (enqueue_run.lua, the hot path of a
-- one-by-one enqueue, writes one run the same way in its own top-level code):
--   enqueue_plan   what every run of the call shares: status, keys, scores,
--                  the fields of the run hash but its id and input
--   enqueue_one    one run's hash and idempotency key (never over an existing
--                  run; an existing key returns its run)
--   enqueue_flush  the indexes of every run made, one ZADD per index
-- Whether a run of `wf` becoming queued now is parked at once (enqueue, the
-- promoter) instead of going to its ready set: the workflow has parked runs
-- already and is at its max_concurrency (as the claim's gate reads it;
-- `run_limit` the limit stored on the run). A claim would park it anyway.
-- One EXISTS when nothing is parked; a key of another type answers false.
local function parks_at_once(tag, wf, run_limit)
  local waiting = k_waiting(tag, wf)
  if redis.call('EXISTS', waiting) == 0 then return false end
  local running = redis.pcall('SCARD', k_running(tag, wf))
  local m = redis.pcall('HGET', k_wf(tag, wf), 'maxConcurrency')
  if failed(running) or failed(m) or redis.call('TYPE', waiting).ok ~= 'zset' then
    return false
  end
  local limit = tonumber(m) or tonumber(run_limit) or 1
  return running >= math.max(limit, 1)
end

-- A linked parent that found run `id` by its idempotency key, other than its
-- parentRunId, goes in run:<id>:parents (sweep_runs.lua keeps the run meanwhile).
local function link_parent(tag, id, parent)
  if redis.call('HGET', k_run(tag, id), 'parentRunId') ~= parent then
    redis.pcall('SADD', k_parents(tag, id), parent)
  end
end

-- `a`: workflow, queue, max_attempts, run_at (0 = now), idem_ttl, parent,
-- cron_id, max_concurrency, timeout_ms ('' = none), priority (checked 0..9),
-- link (the parent awaits the runs: recorded in run:<parent>:children, whose
-- unfinished members a cancel of the parent cancels), traceparent, tracestate
-- (optional).
local function enqueue_plan(tag, a, now)
  local status, due = 'queued', now
  if a.run_at > now then status, due = 'scheduled', a.run_at end
  local ns = ms(now)
  local fields = { 'id', '', 'workflow', a.workflow, 'queue', a.queue,
    'status', status, 'inputJson', '', 'attempt', 1,
    'maxAttempts', a.max_attempts, 'createdAt', ns, 'availableAt', ms(due), 'updatedAt', ns }
  local n = #fields
  if a.parent ~= '' then fields[n + 1], fields[n + 2], n = 'parentRunId', a.parent, n + 2 end
  if a.cron_id ~= '' then fields[n + 1], fields[n + 2], n = 'cronId', a.cron_id, n + 2 end
  if a.max_concurrency ~= '' then
    fields[n + 1], fields[n + 2], n = 'maxConcurrency', a.max_concurrency, n + 2
  end
  if a.timeout_ms ~= '' then fields[n + 1], fields[n + 2], n = 'timeoutMs', a.timeout_ms, n + 2 end
  if a.priority ~= 0 then fields[n + 1], fields[n + 2], n = 'priority', a.priority, n + 2 end
  -- The enqueuer's W3C trace context, when a caller passes one (nil or '' = none).
  if a.traceparent and a.traceparent ~= '' then
    fields[n + 1], fields[n + 2], n = 'traceparent', a.traceparent, n + 2
  end
  if a.tracestate and a.tracestate ~= '' then
    fields[n + 1], fields[n + 2] = 'tracestate', a.tracestate
  end
  local p = { tag = tag, a = a, now = now, status = status, due = due,
    fields = fields, n = #fields, made = {} }
  -- a.link: the parent awaits these children (run_workflow/run_workflows): each
  -- one, new or found by its key, goes in run:<parent>:children (cancel cascade).
  if a.link and a.parent ~= '' then p.children = k_children(tag, a.parent) end
  if status == 'scheduled' then
    p.queue_key, p.queue_score = k_scheduled(tag, a.queue), int_str(due)
  else
    p.queue_key, p.queue_score = k_ready(tag, a.queue), ready_score(a.priority, now)
    -- Parked at once (parks_at_once), where a claim would put them: a backlog of
    -- one workflow in the ready set held up the queue's other workflows (1,000,000
    -- runs: 51 s while claims parked it 32 a call).
    if parks_at_once(tag, a.workflow, a.max_concurrency) then
      p.queue_key, p.parking = k_waiting(tag, a.workflow), true
    end
  end
  return p
end

-- The runs `p` made and has not indexed yet go (their records, idempotency keys
-- and links): a call that fails leaves no run that no set holds (a script error
-- rolls nothing back; a retry with the idempotency key would have found it).
local function unmake(p)
  for i, id in ipairs(p.made) do
    redis.call('DEL', k_run(p.tag, id))
    if p.idems and p.idems[i] then redis.call('DEL', p.idems[i]) end
    if p.children then redis.pcall('SREM', p.children, id) end
  end
  p.made, p.idems = {}, {}
end

local function enqueue_one(p, id, input_json, idem_key)
  local tag = p.tag
  local idem = nil
  if idem_key ~= '' then
    idem = k_idem(tag, p.a.workflow, idem_key)
    local existing = redis.pcall('GET', idem)
    if failed(existing) then
      unmake(p)
      refuse(idem, existing)
    end
    -- A key whose run was already removed by retention no longer dedupes.
    if existing and redis.call('EXISTS', k_run(tag, existing)) == 1 then
      if p.children then
        redis.pcall('SADD', p.children, existing)
        link_parent(tag, existing, p.a.parent)
      end
      return existing, 0
    end
  end
  local run = k_run(tag, id)
  -- Never over an existing run, whatever the call: the original of a resent
  -- call can reach Redis after its resend (a retransmission after a healed
  -- network), when the run may be running or finished already.
  if redis.call('EXISTS', run) == 1 then return id, 0 end
  -- (a cancel cascade's list: see `failed`)
  if p.children then redis.pcall('SADD', p.children, id) end
  local f, n = p.fields, p.n
  f[2], f[10] = id, input_json
  if idem then
    f[n + 1], f[n + 2], f[n + 3], f[n + 4] =
      'idempotencyKey', idem_key, 'idempotencyTtlMs', p.a.idem_ttl
    n = n + 4
  end
  redis.call('HSET', run, unpack(f, 1, n))
  -- No expiry while the run is unfinished (finalize sets it): a run scheduled
  -- further ahead than the TTL must still dedupe.
  if idem then redis.call('SET', idem, id) end
  p.made[#p.made + 1] = id
  p.idems = p.idems or {}
  p.idems[#p.made] = idem or false
  return id, 1
end

-- ZADD of every id in `ids` with one score, in slices (unpack's stack limit).
local function zadd_all(key, score, ids)
  if #ids == 1 then
    redis.call('ZADD', key, score, ids[1])
    return
  end
  for first = 1, #ids, 400 do
    local args = {}
    for i = first, math.min(first + 399, #ids) do
      args[#args + 1] = score
      args[#args + 1] = ids[i]
    end
    redis.call('ZADD', key, unpack(args))
  end
end

local function enqueue_flush(p)
  local made = p.made
  if #made == 0 then return end
  local tag, q, now = p.tag, p.a.queue, ms(p.now)
  -- The queue's set and due-queues first (see `failed`): one of another type
  -- fails the call before any index names the new runs, and they go (unmake).
  local ok, err = pcall(zadd_all, p.queue_key, p.queue_score, made)
  if not ok then
    unmake(p)
    refuse(p.queue_key, err)
  end
  if p.status == 'scheduled' and not mark_due(tag, q, p.due) then
    for first = 1, #made, 400 do
      redis.call('ZREM', p.queue_key, unpack(made, first, math.min(first + 399, #made)))
    end
    unmake(p)
    refuse(k_due_queues(tag), 'WRONGTYPE')
  end
  -- Indexes that only list runs: a refusal is skipped (see `failed`).
  pcall(zadd_all, tag .. ':runs:created', now, made)
  pcall(zadd_all, k_wf_runs(tag, p.a.workflow), now, made)
  pcall(zadd_all, k_status(tag, p.status), now, made)
  -- For listing only (ops views, metrics); forget_queues removes idle ones.
  redis.pcall('SADD', tag .. ':queues', q)
  if p.parking then
    redis.pcall('SADD', tag .. ':parked', p.a.workflow)
  elseif p.status ~= 'scheduled' then
    -- Ring only when the set was empty: the worker a bell wakes rings again
    -- while work remains (claim_run.lua), so a burst wakes every idle worker
    -- without a bell per run. ready-queues: see mark_ready (priority 0 into a
    -- non-empty set: no write).
    local was_empty = redis.call('ZCARD', p.queue_key) == #made
    if was_empty or p.a.priority ~= 0 then mark_ready(tag, q, p.queue_score) end
    if was_empty then ring(tag, q) end
  end
  p.made, p.idems = {}, {}
end

-- The statuses a run record may hold (a claim fails a run with another: fail_corrupt).
local KNOWN_STATUS = { scheduled = true, queued = true, running = true, succeeded = true,
  failed = true, canceled = true, suspended = true }
-- KNOWN_STATUS[s] for take and fail_corrupt (see is_terminal, _lib.lua: no table per call).
local function known_status(s)
  return is_terminal(s) or s == 'queued' or s == 'running' or s == 'scheduled' or s == 'suspended'
end

-- True when a stored integer field is present but not an integer.
local function bad_int(v)
  return v ~= nil and v ~= false and v ~= '' and not string.match(v, '^%d+$')
end

-- fail_corrupt and give_back: a claim's exits for a run it cannot start (a corrupted
-- record, a key of another type), made by claim_faults() on first use and returned by
-- name (`claim_faults().give_back(...)`), once per call (the function library: once per
-- load), as exit_helpers() in _lib.lua: a claim that starts its run needs neither.
local CLAIM_FAULTS = nil
local function claim_faults()
  if CLAIM_FAULTS then return CLAIM_FAULTS end
  -- A ready entry whose run record is unusable fails with a clear error instead
  -- of reaching a worker (whose reply parsing it would break) or being dropped
  -- silently. A record with an unknown or missing status is reset to `queued`
  -- first so that finalize applies (its index entry is dropped).
  local function fail_corrupt(tag, id, why, now)
    local run = k_run(tag, id)
    local old = redis.call('HGET', run, 'status')
    if not old or not known_status(old) then
      if old then redis.call('ZREM', k_status(tag, old), id) end
      redis.call('HSET', run, 'status', 'queued')
    end
    finalize(tag, id, 'failed', 'errorJson', cjson.encode({ type = 'CorruptRecord',
      message = 'run record is corrupted: ' .. why, retryable = false }), now, '')
    return nil
  end

  -- A key a claim of run `id` needs is of another type (wf-running:<wf>, workflow:<wf>,
  -- wf-waiting:<wf>, rate:<wf>, a scheduled set, due-queues): the run goes back to the ready set of
  -- `q` a minute later (never stranded, and the other runs pass first), out of `slot` (its wf-running
  -- set, nil: none taken), and the call fails naming `key` (see `failed`). Made by claim_faults, not
  -- a closure in `take`: no closure is made per claim.
  local function give_back(tag, id, q, score, slot, key, e)
    if slot then redis.call('SREM', slot, id) end
    local later = int_str(tonumber(score) + 60000)
    redis.call('ZADD', k_ready(tag, q), later, id)
    mark_ready(tag, q, later)
    refuse(key, e)
  end
  CLAIM_FAULTS = { fail_corrupt = fail_corrupt, give_back = give_back }
  return CLAIM_FAULTS
end

-- Ids dropped by `take` because their run record is gone, reported to the caller
-- so that it can say so in its log.
local DROPPED = nil  -- (a table made by the first: none on the hot path)

-- The most step records, and bytes of them, a claim's reply carries (see take).
local STEPS_INLINE = 1000
local STEPS_INLINE_BYTES = 1048576

-- Take the run `id` that the caller just removed from the ready set of `q`
-- (where it had `score`): check it, gate it on max_concurrency, lease it and
-- mark it running. Returns a reply table for a claimed run, or nil when the
-- id was skipped (stale, canceled, corrupted or parked).

-- The fields of a run that a claim reads (take, retake: TAKE_FIELDS there, written
-- out: no table per call, no unpack). f[16], stepBytes, is
-- read by claim_steps only for a run that started before (a first claim has no
-- steps): each field an HMGET asks for walks the run's listpack, a missing one
-- all of it. (An HGETALL instead, its fields picked by name, cost about 9,000
-- redis-server instructions more a claim: each value it returns is a Lua string.)
-- 'status', 'workflow', 'cancelRequestedAt', 'maxConcurrency', 'inputJson', 'attempt',
-- 'maxAttempts', 'createdAt', 'parentRunId', 'timeoutMs', 'cronId', 'startedAt', 'queue',
-- 'availableAt', 'rateSlot'

-- The step records a claim's reply carries (see take): steps, unread; or
-- false when the steps key is not a hash (the run is failed as corrupted).
-- steps: '' when the run never started (no step: a string, not an empty table,
-- in the reply: an empty table costs redis-server's reply conversion about 5,000
-- instructions, benchmarks.script_instr), else the HGETALL of its steps (or
-- '' past STEPS_INLINE: unread says how many).
-- Sets f[16], the run's stepBytes, when it started before (claim_reply reads it).
local function claim_steps(tag, id, f, now)
  local steps = ''
  local unread = ''
  if f[12] and f[12] ~= '' then
    f[16] = redis.call('HGET', k_run(tag, id), 'stepBytes')
    local size = finite(f[16])
    if size and size < 1 then size = nil end
    local n = redis.pcall('HLEN', k_steps(tag, id))
    -- A stepBytes missing (or not a positive number) says nothing of their size:
    -- more than one record then goes by pages (48 steps of 8 MiB came in one
    -- HGETALL of 384 MB).
    local few = not failed(n) and n <= STEPS_INLINE and (size and size <= STEPS_INLINE_BYTES
      or not size and n <= 1)
    if few then steps = redis.pcall('HGETALL', k_steps(tag, id)) end
    if failed(n) or failed(steps) then
      claim_faults().fail_corrupt(tag, id, 'its steps key ' .. k_steps(tag, id) .. ' is not a hash',
        now)
      return false
    end
    if not few and n > 0 then unread = tostring(n) end
  end
  return steps, unread
end

-- A claim's reply for run `id` (fields `f`, TAKE_FIELDS), claimed from queue `q`:
-- unread and unreadBytes only when some steps are left unread (each element costs
-- the reply's conversion about 500 redis-server instructions; the worker reads a
-- missing one as '').
local function claim_reply(id, q, f, started, steps, unread)
  if unread == '' then
    return { id, f[2], f[13] or q, f[5], f[6] or '1', f[7] or '1', f[8] or '0', f[9] or '',
      f[10] or '', f[11] or '', tostring(started), steps, f[14] or '' }
  end
  local size = finite(f[16])  -- stepBytes
  return { id, f[2], f[13] or q, f[5], f[6] or '1', f[7] or '1', f[8] or '0', f[9] or '',
    f[10] or '', f[11] or '', tostring(started), steps, f[14] or '', unread,
    size and int_str(size) or '' }
end

local function take(tag, id, q, score, token, lease_ms, now)
  local run = k_run(tag, id)
  -- pcall: a foreign key of another type under the run's name must not fail the
  -- whole claim (WRONGTYPE); it is dropped like a missing hash.
  local f = redis.pcall('HMGET', run, 'status', 'workflow', 'cancelRequestedAt',
    'maxConcurrency', 'inputJson', 'attempt', 'maxAttempts', 'createdAt', 'parentRunId',
    'timeoutMs', 'cronId', 'startedAt', 'queue', 'availableAt', 'rateSlot')  -- TAKE_FIELDS
  if f.err or not (f[1] or f[2] or f[5]) then
    -- Hash gone (a stale entry) or not a hash: drop the entry, never execute it.
    if not DROPPED then DROPPED = {} end
    DROPPED[#DROPPED + 1] = q .. ' ' .. id
    return nil
  end
  if not f[1] or not known_status(f[1]) then
    return claim_faults().fail_corrupt(tag, id, 'unknown status ' .. tostring(f[1] or '(none)'),
      now)
  end
  -- A run that is no longer queued (canceled, or a stale duplicate entry):
  -- drop the entry, never execute it.
  if f[1] ~= 'queued' then return nil end
  local wf = f[2]
  if not wf or wf == '' or not f[5] then
    return claim_faults().fail_corrupt(tag, id, 'missing its workflow or inputJson field', now)
  end
  -- The integer fields (attempt, maxAttempts, createdAt, timeoutMs, startedAt, and
  -- availableAt, in the reply too: the worker reads them as integers), a missing or
  -- empty one allowed: one find of a non-digit in them all (concatenated: one has a
  -- non-digit iff they have), and the field named only then (a string.match per
  -- field cost a claim about 2,000 redis-server instructions).
  if string.find((f[6] or '') .. (f[7] or '') .. (f[8] or '') .. (f[10] or '') ..
    (f[12] or '') .. (f[14] or ''), '%D') then
    for i = 6, 12 do  -- attempt, maxAttempts, createdAt, timeoutMs, startedAt (not 9, 11)
      if i ~= 9 and i ~= 11 and bad_int(f[i]) then
        local names = { 'attempt', 'maxAttempts', 'createdAt', '', 'timeoutMs', '', 'startedAt' }
        return claim_faults().fail_corrupt(tag, id,
          'field ' .. names[i - 5] .. ' is not an integer', now)
      end
    end
    -- availableAt is in the claim's reply too (the worker reads it as an integer)
    if bad_int(f[14]) then
      return claim_faults().fail_corrupt(tag, id, 'field availableAt is not an integer', now)
    end
  end
  if f[3] and f[3] ~= '' then
    finalize(tag, id, 'canceled', 'errorJson', '', now, '')
    return nil
  end
  local running = k_running(tag, wf)
  -- Slot first: SADD answers 0 for a woken suspended run (it holds its slot and
  -- passes, and its resume is no new start for the rate limit). Another run
  -- passes when the set, with it, holds at most max_concurrency, else gives it back.
  local added = redis.pcall('SADD', running, id)
  if failed(added) then
    claim_faults().give_back(tag, id, q, score, nil, running, added)
  end
  local woken = added == 0
  local slot = running  -- what give_back takes back (nil: a woken run keeps its slot)
  if woken then slot = nil end
  if not woken then
    local m = redis.pcall('HMGET', k_wf(tag, wf), 'maxConcurrency', 'rateLimit')
    if failed(m) then
      claim_faults().give_back(tag, id, q, score, slot, k_wf(tag, wf), m)
    end
    local limit = tonumber(m[1]) or tonumber(f[4]) or 1
    if limit < 1 then limit = 1 end
    if redis.call('SCARD', running) > limit then
      local parked = redis.pcall('ZADD', k_waiting(tag, wf), score, id)
      if failed(parked) then
        claim_faults().give_back(tag, id, q, score, slot, k_waiting(tag, wf), parked)
      end
      redis.call('SREM', running, id)
      redis.pcall('SADD', tag .. ':parked', wf)
      if f[15] and f[15] ~= '' then
        local _, rate_unreserve = rate_gate()
        rate_unreserve(tag, wf, id, f[15])
      end
      return nil
    end
    -- The rate gate, for a workflow with a rate limit or a run with a reservation
    -- (rate_deferred answers false for neither, after three calls of helpers; rate_gate
    -- makes them).
    if (m[2] and m[2] ~= '') or (f[15] and f[15] ~= '') then
      local rate_deferred = rate_gate()
      local deferred, bad, e = rate_deferred(tag, id, wf, f[13] or q, f[15], now, m[2])
      if bad then
        claim_faults().give_back(tag, id, q, score, slot, bad, e)
      end
      if deferred then
        redis.call('SREM', running, id)
        return nil
      end
    end
  end
  -- A run that never started has no steps: skip the read. Read before the run
  -- changes: a steps key of another type fails the run as corrupted (it cannot
  -- replay), instead of failing every claim of it after marking it running.
  -- Up to STEPS_INLINE records of at most STEPS_INLINE_BYTES in all come in the
  -- reply; past that only their count and size, and the worker reads them by
  -- HSCAN pages (one HGETALL of 100,000 steps held Redis for 0.26 s at each
  -- claim, of 1,000,000 for 3.1 s; of 100 steps of 1 MiB each, 0.8 s). Only the
  -- lease holder writes step records, so a read after the claim sees what the
  -- claim would have. stepBytes is missing for runs recorded before it existed.
  local steps, unread = claim_steps(tag, id, f, now)
  if not steps then return nil end
  -- '%d' (integers below 2^53): int_str's '%.0f' takes printf's multi-precision
  -- path, about 2,500 redis-server instructions a number (see enqueue). '%d' is a
  -- C long: a lease past 2^53 (Worker takes any lease_ms >= 100, sys.maxsize for
  -- "never") goes through int_str, or its expiry wrapped to -2^63 and the reaper
  -- put the run back at once while its worker still ran it.
  local expiry = now + lease_ms
  local lease_s, expiry_s
  if expiry < 9007199254740992 then
    lease_s, expiry_s = string.format('%d', lease_ms), string.format('%d', expiry)
  else
    lease_s, expiry_s = int_str(lease_ms), int_str(expiry)
  end
  local leased = redis.pcall('ZADD', k_leases(tag), expiry_s, id)
  if failed(leased) then
    -- `leases` of another type: put the run back where it was (at its own score:
    -- no claim can pass while it is broken) and fail the call.
    if not woken then redis.call('SREM', running, id) end
    redis.call('ZADD', k_ready(tag, q), score, id)
    mark_ready(tag, q, score)
    refuse(k_leases(tag), leased)
  end
  local started = f[12]
  local ns = ms(now)
  if not started or started == '' then
    started = ns
    redis.call('HSET', run, 'status', 'running', 'lease', token, 'startedAt', ns,
      'updatedAt', ns, 'attemptStartedAt', ns, 'leaseMs', lease_s)
  elseif woken then  -- a resume: the attempt started at its first execution
    redis.call('HSET', run, 'status', 'running', 'lease', token, 'updatedAt', ns,
      'leaseMs', lease_s)
  else
    redis.call('HSET', run, 'status', 'running', 'lease', token, 'updatedAt', ns,
      'attemptStartedAt', ns, 'leaseMs', lease_s)
  end
  move_status(tag, id, 'queued', 'running', now)
  return claim_reply(id, q, f, started, steps, unread)
end
