-- _lib.lua: helpers shared by every script (scripts.py prepends this file).
--
-- Key names mirror redflow_mp/keys.py; every helper takes the hash tag
-- `{prefix}` (ARGV[1] of every script) so derived keys stay in one slot.
-- Times come from the server clock (TIME), never from the caller, so hosts
-- with skewed clocks agree on leases, due times and cron.
--
-- Run state transitions kept here so that the entry scripts (claim, finalize,
-- retry, requeue, cancel, reap, promote, cron) share one implementation:
--   enqueue            -> queued | scheduled (never over an existing run)
--   claim              queued -> running (lease taken, concurrency gate passed)
--   park               queued stays queued, moves to wf-waiting:<wf>
--   finalize           running | queued | scheduled | suspended -> succeeded | failed | canceled
--                      (a finished child wakes the parents suspended on it)
--   suspend            running -> suspended (suspend_run.lua: lease dropped, slot kept)
--   wake               suspended -> queued (child finished, event, timer, cancel)
--   retry              running -> queued | scheduled (attempt + 1)
--   requeue            running -> queued (worker gone; optional crash count)
-- Every function that acts for a lease holder is only called after the caller
-- checked the token (lease_held).
--
-- Keyspace v2 invariants kept by these helpers:
-- * A lease is held iff the run hash's `lease` field holds the token AND the
--   run is in `leases` (scored by its expiry, server ms). Claim sets both;
--   renewals and step writes move the expiry (ZADD XX); every exit from
--   `running` (the reaper's requeue of an expired lease included) removes the
--   `leases` entry. An expiry is the reaper's licence to take the run back,
--   not a revocation by itself: until the reaper acts, the holder may renew
--   and write (after a Redis stall nobody could renew through, the reaper
--   waits a lease first: reap_runs.lua). The reaper finds expired leases with
--   one range read, whatever the number of runs in flight.
-- * A queued run is in exactly one of q:<queue>:ready (ZSET) and
--   wf-waiting:<wf> (ZSET), a scheduled run in q:<queue>:scheduled (ZSET), and
--   `due-queues` scores every queue with scheduled runs no later than its
--   earliest due time. Ready and waiting scores are ready_score(priority, t):
--   lower is claimed first (higher priority, then older).
-- * A suspended run has no `leases` entry (no process holds it) but stays in
--   wf-running:<wf> (its concurrency slot) until it finishes; woken, it goes
--   back to its ready set still counted there, and `take` lets it through the
--   gate without counting it twice. Its `wait` field says what it waits for;
--   run:<id>:awaits holds the awaited children not finished yet (each child's
--   run:<child>:waiters names the parents), `timers` its wake-up time.
-- * An idempotency key has no expiry while its run is unfinished; when the run
--   finishes, the key (if it still names the run) expires at
--   max(createdAt + ttl, now + 1 s).

local BELL_CAP = 64
local TERMINAL = { succeeded = true, failed = true, canceled = true }
-- One priority band of ready scores: 2^44 ms (557 years). With priorities 0..9,
-- scores stay below 10 * 2^44 < 2^53, exact in Lua's doubles.
local BAND = 17592186044416
-- The latest expiry time set (2^53 - 1 ms, exact in a double; PEXPIREAT accepts it).
local MAX_EXPIRE_AT = 9007199254740991

-- now_ms() also keeps its time as digits: writes pass ms(now), not a number that
-- Redis would format (printf of a double) for every argument.
local NOW, NOW_S = nil, nil

local function now_ms()
  local t = redis.call('TIME')
  local us = t[2]
  local whole = #us > 3 and string.sub(us, 1, #us - 3) or '0'  -- whole ms of the us
  NOW_S = t[1] .. string.rep('0', 3 - #whole) .. whole
  NOW = tonumber(NOW_S)
  return NOW
end

local function k_run(tag, id) return tag .. ':run:' .. id end
local function k_steps(tag, id) return tag .. ':run:' .. id .. ':steps' end
local function k_leases(tag) return tag .. ':leases' end
local function k_status(tag, status) return tag .. ':runs:status:' .. status end
local function k_ready(tag, q) return tag .. ':q:' .. q .. ':ready' end
local function k_scheduled(tag, q) return tag .. ':q:' .. q .. ':scheduled' end
local function k_bell(tag, q) return tag .. ':q:' .. q .. ':bell' end
local function k_due_queues(tag) return tag .. ':due-queues' end
local function k_wf(tag, wf) return tag .. ':workflow:' .. wf end
local function k_wf_runs(tag, wf) return tag .. ':workflow-runs:' .. wf end
local function k_running(tag, wf) return tag .. ':wf-running:' .. wf end
local function k_waiting(tag, wf) return tag .. ':wf-waiting:' .. wf end
local function k_timers(tag) return tag .. ':timers' end
local function k_awaits(tag, id) return tag .. ':run:' .. id .. ':awaits' end
local function k_waiters(tag, id) return tag .. ':run:' .. id .. ':waiters' end
local function k_children(tag, id) return tag .. ':run:' .. id .. ':children' end
local function k_evnames(tag, id) return tag .. ':run:' .. id .. ':events' end
local function k_ev(tag, id, name)
  return tag .. ':run:' .. id .. ':ev:' .. string.len(name) .. ':' .. name
end
local function k_attempts(tag, id) return tag .. ':run:' .. id .. ':attempts' end
-- shards > 1: children of a run in other shards that finished (kick_parent.lua)
local function k_kicked(tag, id) return tag .. ':run:' .. id .. ':kicked' end
-- The shard a run id names: its "~<k>" suffix (shards.py), nil without one.
local function id_shard(id) return string.match(id, '~(%d+)$') end
-- How often (ms) a run suspended on children of other shards is woken to look at
-- them again, in case a finisher died between the child's finish and its kick.
local XSHARD_RECHECK_MS = 30000
local function k_rate(tag, wf) return tag .. ':rate:' .. wf end
local function k_idem(tag, wf, key)
  return tag .. ':idempo:' .. string.len(wf) .. ':' .. wf .. ':' .. string.len(key) .. ':' .. key
end

-- An integral number as exact decimal digits. Lua's tostring (and `..`) keeps
-- 14 significant digits: a ready score (15 digits) would come out rounded.
local function int_str(n) return string.format('%.0f', n) end

-- int_str(n), without formatting when n is the time now_ms() returned last.
local function ms(n) if n == NOW then return NOW_S end return int_str(n) end

-- The ready (and wf-waiting) score of a run of `priority` (0..9, else clamped;
-- missing = 0) that became ready at `t` ms.
local function ready_score(priority, t)
  local p = math.floor(tonumber(priority) or 0)
  if p < 0 then p = 0 elseif p > 9 then p = 9 end
  return int_str((9 - p) * BAND + (tonumber(t) or 0))
end

-- A key shared by many runs may hold another type of value (written by hand or
-- by another program into our prefix), and Redis rolls back nothing of a script
-- that fails half-way. A write to an index that only lists runs (runs:created,
-- runs:status:*, workflow-runs:*, queues, parked, a run's attempts) is a pcall
-- whose refusal is skipped: the transition goes on, the supervisor's key check
-- names the key (keycheck.py). A write that places a run (its ready, scheduled
-- or waiting set, due-queues) comes before the transition's other writes; if it
-- is refused the run stays where it was and the call fails naming the key.
local function failed(r) return type(r) == 'table' and r.err ~= nil end
-- Fail the call for error `e` (a pcall's reply or error) of a write to `key`.
local function refuse(key, e)
  local msg = type(e) == 'table' and e.err or tostring(e)
  if not string.find(msg, 'WRONGTYPE', 1, true) then error({ err = msg }) end
  error({ err = 'WRONGTYPE key ' .. key .. ' holds another type of value than redflow-mp ' ..
    'writes there (written by hand or by another program?): delete or rename it' })
end

-- Wake one idle worker of `q`. The list is capped: bells only wake blocked
-- workers, busy ones claim straight from the ready set. A bell key of another
-- type (written by hand or by another program) is left alone: ringing comes
-- after the script's writes, and an error there would half-apply them.
local function ring(tag, q)
  local bell = k_bell(tag, q)
  local n = redis.pcall('LLEN', bell)
  if type(n) == 'number' and n < BELL_CAP then
    redis.call('LPUSH', bell, '1')
  end
end

-- Due time `due` of a run added to the scheduled set of `q`: the promoter
-- looks at `q` by then (LT: only ever moves a queue earlier, adds a new one).
-- Returns false when due-queues is of another type (nothing written).
local function mark_due(tag, q, due)
  return not failed(redis.pcall('ZADD', k_due_queues(tag), 'LT', int_str(due), q))
end

local function move_status(tag, id, old, new, now)
  if old and old ~= '' and old ~= new then
    redis.pcall('ZREM', k_status(tag, old), id)  -- an index: see `failed`
  end
  redis.pcall('ZADD', k_status(tag, new), ms(now), id)
end

-- True when `token` holds the lease of run `id`: the run hash names it and the
-- run is still in `leases`. An expired lease stays held until someone acts on
-- the expiry: the reaper's requeue (or any other end of the run) removes the
-- run from `leases`, and a new claim writes another token, atomically. So a
-- holder that could not renew through a Redis stall or restart goes on once
-- Redis is back, unless the run was taken over meanwhile (the reaper holds
-- off after such a gap: reap_runs.lua). `now` is unused (kept for callers).
local function lease_held(tag, id, token, now)
  if token == '' or redis.call('HGET', k_run(tag, id), 'lease') ~= token then return false end
  return redis.call('ZSCORE', k_leases(tag), id) ~= false
end

-- The lease check failed: if `token`'s finish was the last one applied to the
-- run (its reply was lost and this is the resend), the run's status now; else nil.
local function already_done(tag, id, token)
  if token == '' then return nil end
  local f = redis.call('HMGET', k_run(tag, id), 'doneToken', 'status')
  if f[1] == token then return f[2] end
  return nil
end

-- The effective max_concurrency of a workflow: synced metadata wins, then the
-- value stored on the run at enqueue, then 1.
local function wf_limit(tag, wf, run_limit)
  local m = tonumber(redis.call('HGET', k_wf(tag, wf), 'maxConcurrency'))
    or tonumber(run_limit) or 1
  if m < 1 then m = 1 end
  return m
end

-- Move up to `n` parked runs of `wf` (highest priority, oldest first) back to
-- their ready sets, near the front of their priority band (their createdAt).
local function release_parked(tag, wf, n)
  local waiting = k_waiting(tag, wf)
  if redis.call('EXISTS', waiting) == 0 then return 0 end  -- the common case: a read
  local released = 0
  local guard = 0
  while released < n and guard < n + 16 do
    guard = guard + 1
    local top = redis.pcall('ZPOPMIN', waiting)
    -- None left (or a waiting set of another type): leave `parked` alone (the
    -- reaper drops a stale member there).
    if failed(top) or not top[1] then break end
    local id = top[1]
    local f = redis.pcall('HMGET', k_run(tag, id), 'status', 'queue', 'priority', 'createdAt')
    if not failed(f) and f[1] == 'queued' and f[2] then
      if failed(redis.pcall('ZADD', k_ready(tag, f[2]), ready_score(f[3], f[4]), id)) then
        redis.call('ZADD', waiting, top[2], id)  -- its ready set is of another type: it waits
        break
      end
      ring(tag, f[2])
      released = released + 1
    end
  end
  if released > 0 and redis.call('ZCARD', waiting) == 0 then
    redis.pcall('SREM', tag .. ':parked', wf)
  end
  return released
end

-- Common exit from `running`: drop the lease entry and the concurrency slot; a
-- freed slot releases one parked run of the same workflow.
local function leave_running(tag, id, wf)
  redis.pcall('ZREM', k_leases(tag), id)  -- of another type: it holds no lease
  if wf and redis.pcall('SREM', k_running(tag, wf), id) == 1 then
    release_parked(tag, wf, 1)
  end
end

-- suspended -> queued: back to its ready set near the front of its priority
-- band (its createdAt), still counted in wf-running:<wf>; its timer and awaited
-- set go. Returns true when the run was suspended (and is now queued).
local function wake(tag, id, now)
  local run = k_run(tag, id)
  local f = redis.pcall('HMGET', run, 'status', 'queue', 'priority', 'createdAt')
  if failed(f) or f[1] ~= 'suspended' or not f[2] then return false end
  -- Placed first: a ready set of another type leaves it suspended, tried again
  -- by its timer a minute later.
  if failed(redis.pcall('ZADD', k_ready(tag, f[2]), ready_score(f[3], f[4]), id)) then
    redis.pcall('ZADD', k_timers(tag), int_str(now + 60000), id)
    return false
  end
  redis.call('HSET', run, 'status', 'queued', 'updatedAt', now, 'wokenAt', now)
  redis.call('HDEL', run, 'wait')
  move_status(tag, id, 'suspended', 'queued', now)
  redis.pcall('ZREM', k_timers(tag), id)
  redis.call('DEL', k_awaits(tag, id))
  ring(tag, f[2])
  return true
end

-- Run `id` finished with `status`: the parents suspended on it lose it from
-- their awaited set; a parent whose set is now empty wakes, and so does every
-- parent when the run did not succeed (its wait step fails at once). Bounded by
-- the parents awaiting this one run (usually one).
local function notify_waiters(tag, id, now, status)
  local waiters = k_waiters(tag, id)
  local n = redis.pcall('SCARD', waiters)
  if failed(n) or n == 0 then return end
  local parent = redis.call('SPOP', waiters)
  while parent do
    local awaits = k_awaits(tag, parent)
    local gone = redis.pcall('SREM', awaits, id)
    -- (an awaited set of another type: the parent wakes and reads its children)
    if failed(gone) or (gone == 1
      and (status ~= 'succeeded' or redis.call('SCARD', awaits) == 0)) then
      wake(tag, parent, now)
    end
    parent = redis.call('SPOP', waiters)
  end
end

-- Each execution of a run that ends (finish, retry, put back) appends one entry
-- to run:<id>:attempts, capped at the newest ATTEMPTS_CAP: {"attempt", "startedAt"
-- (this execution's claim), "finishedAt", "outcome" (succeeded | failed |
-- canceled | retried | requeued), "errorJson" (the error as stored, a string),
-- "cause" (why a worker lost it)}. Called only for a run leaving `running`,
-- before its attempt field changes. Numbers are written as exact digits.
local ATTEMPTS_CAP = 100

-- `pre`: the run's attempt, attemptStartedAt, startedAt if read already (else nil).
local function record_attempt(tag, id, outcome, error_json, cause, now, pre)
  local f = pre or redis.call('HMGET', k_run(tag, id), 'attempt', 'attemptStartedAt', 'startedAt')
  local started = tonumber(f[2]) or tonumber(f[3]) or now
  local entry = '{"attempt":' .. int_str(tonumber(f[1]) or 1) .. ',"startedAt":' ..
    int_str(started) .. ',"finishedAt":' .. ms(now) .. ',"outcome":"' .. outcome .. '"'
  if error_json and error_json ~= '' then
    entry = entry .. ',"errorJson":' .. cjson.encode(error_json)
  end
  if cause and cause ~= '' then entry = entry .. ',"cause":' .. cjson.encode(cause) end
  local list = k_attempts(tag, id)
  local len = redis.pcall('RPUSH', list, entry .. '}')  -- a history: see `failed`
  if type(len) == 'number' and len > ATTEMPTS_CAP then
    redis.call('LTRIM', list, -ATTEMPTS_CAP, -1)
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

-- The run finished: its idempotency key (if it still names the run) now expires
-- at createdAt + ttl, but not before a second from now (a caller racing the
-- finish still finds the run). A key of a run enqueued before keyspace v2 (no
-- stored TTL) keeps the expiry it was created with.
local function expire_idempotency(tag, id, wf, key, ttl, created, now)
  if not wf or not key or key == '' or not tonumber(ttl) then return end
  local idem = k_idem(tag, wf, key)
  if redis.pcall('GET', idem) == id then  -- (of another type: no key of this run)
    local at = (tonumber(created) or now) + tonumber(ttl)
    if at < now + 1000 then at = now + 1000 end
    -- A huge TTL (1e17 s) would make PEXPIREAT fail half-way through a finish.
    if at > MAX_EXPIRE_AT then at = MAX_EXPIRE_AT end
    redis.call('PEXPIREAT', idem, int_str(at))
  end
end

-- running|queued|scheduled|suspended -> terminal. `field` is 'outputJson' or 'errorJson'.
-- A run whose cancellation was requested always ends `canceled` (a succeeded
-- output is still stored for inspection). `done_token` ('' = none) is the
-- lease token of the caller that applied this finish (see already_done).
-- What a fenced finish reads of run hash `run` (lease check, finalize, attempt
-- entry), in one HMGET; f[12] lease, f[13] doneToken.
local function finish_fields(run)
  return redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow',
    'cancelReason', 'idempotencyKey', 'idempotencyTtlMs', 'createdAt', 'attempt',
    'attemptStartedAt', 'startedAt', 'lease', 'doneToken')
end

-- lease_held and already_done over finish_fields `f`: true, or false and the
-- run's status when `token`'s finish was the last one applied (else nil).
local function lease_check(tag, id, f, token, now)
  if token == '' then return false, nil end
  -- held as in lease_held: the token named and the run still in `leases`
  if f[12] == token and redis.call('ZSCORE', k_leases(tag), id) then return true, nil end
  return false, (f[13] == token and f[1]) or nil
end

-- `pre`: finish_fields of the run when the caller read them already (else nil).
local function finalize(tag, id, status, field, payload, now, done_token, pre)
  local run = k_run(tag, id)
  local f = pre or finish_fields(run)
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
  local ns = ms(now)
  local fields = { 'status', status, 'finishedAt', ns, 'updatedAt', ns }
  if payload ~= '' then
    fields[#fields + 1] = field
    fields[#fields + 1] = payload
  end
  if done_token and done_token ~= '' then
    fields[#fields + 1] = 'doneToken'
    fields[#fields + 1] = done_token
  end
  if old == 'running' then
    local err = ''
    if field == 'errorJson' then err = payload end
    record_attempt(tag, id, status, err, '', now, { f[9], f[10], f[11] })
  end
  redis.call('HSET', run, unpack(fields))
  move_status(tag, id, old, status, now)
  -- Every unfinished status may hold a slot: running, suspended, and queued
  -- after a wake (no-ops otherwise).
  leave_running(tag, id, f[4])
  if old == 'suspended' then
    redis.call('HDEL', run, 'wait')
    redis.pcall('ZREM', k_timers(tag), id)
    redis.call('DEL', k_awaits(tag, id))
  end
  notify_waiters(tag, id, now, status)
  expire_idempotency(tag, id, f[4], f[6], f[7], f[8], now)
  if field == 'outputJson' then
    publish_done(tag, id, status, payload)
  else
    publish_done(tag, id, status, nil)
  end
  return status
end

-- running -> queued (delay 0, at the back of its priority band) or scheduled,
-- attempt + 1.
local function retry(tag, id, error_json, delay_ms, now, done_token)
  local run = k_run(tag, id)
  local f = redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow', 'attempt',
    'priority')
  if f[2] and f[2] ~= '' then
    return finalize(tag, id, 'canceled', 'errorJson', '', now, done_token)
  end
  local q = f[3]
  local due = now + delay_ms
  local status = 'queued'
  -- Placed first (see `failed`). A scheduled set or due-queues of another type:
  -- the retry goes to the ready set at its due time's place (its backoff is not
  -- waited for; never stranded); a ready set of another type fails the call.
  if delay_ms > 0 then
    local sched = k_scheduled(tag, q)
    if not failed(redis.pcall('ZADD', sched, due, id)) then
      if mark_due(tag, q, due) then status = 'scheduled' else redis.call('ZREM', sched, id) end
    end
  end
  if status == 'queued' then
    local r = redis.pcall('ZADD', k_ready(tag, q), ready_score(f[6], due), id)
    if failed(r) then refuse(k_ready(tag, q), r) end
    ring(tag, q)
  end
  if f[1] == 'running' then record_attempt(tag, id, 'retried', error_json, '', now) end
  redis.call('HSET', run, 'status', status, 'attempt', (tonumber(f[5]) or 1) + 1,
    'availableAt', due, 'errorJson', error_json, 'updatedAt', now, 'doneToken', done_token or '')
  move_status(tag, id, f[1], status, now)
  leave_running(tag, id, f[4])
  return status
end

-- running -> queued near the front of its priority band (its createdAt): its
-- worker is gone or stopping. With count_crash, the run's crash counter grows;
-- at max_crashes it fails.
local function requeue(tag, id, cause, count_crash, max_crashes, now, done_token)
  local run = k_run(tag, id)
  local f = redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow',
    'crashCount', 'priority', 'createdAt')
  if f[1] ~= 'running' then return f[1] or '' end
  if f[2] and f[2] ~= '' then
    return finalize(tag, id, 'canceled', 'errorJson', '', now, done_token)
  end
  local crashes = (tonumber(f[5]) or 0) + 1
  if count_crash and crashes >= max_crashes then
    redis.call('HSET', run, 'crashCount', crashes, 'lastCrash', cause)
    local msg = 'run killed its worker process ' .. crashes .. ' times (last: ' .. cause ..
      '); failing it instead of retrying (max_run_crashes=' .. max_crashes .. ')'
    return finalize(tag, id, 'failed', 'errorJson',
      cjson.encode({ type = 'RunCrashedError', message = msg, retryable = false }), now,
      done_token)
  end
  -- Placed first (see `failed`): a ready set of another type fails the call
  -- with nothing written; the run stays running (the reaper tries again later).
  local r = redis.pcall('ZADD', k_ready(tag, f[3]), ready_score(f[6], f[7]), id)
  if failed(r) then refuse(k_ready(tag, f[3]), r) end
  if count_crash then
    redis.call('HSET', run, 'crashCount', crashes, 'lastCrash', cause)
  elseif cause ~= '' then
    redis.call('HSET', run, 'lastCrash', cause)
  end
  record_attempt(tag, id, 'requeued', '', cause, now)
  if done_token and done_token ~= '' then
    redis.call('HSET', run, 'status', 'queued', 'updatedAt', now, 'doneToken', done_token)
  else
    redis.call('HSET', run, 'status', 'queued', 'updatedAt', now)
  end
  move_status(tag, id, 'running', 'queued', now)
  leave_running(tag, id, f[4])
  ring(tag, f[3])
  return 'queued'
end

-- Create a run (or return the existing one for its idempotency key / id).
-- a = { id, workflow, queue, input_json, max_attempts, run_at, idem_key, idem_ttl,
--       parent, cron_id, max_concurrency, timeout_ms, priority, link, traceparent?, tracestate? }
-- a.link: the parent awaits this child (run_workflow): it is recorded in
-- run:<parent>:children, whose unfinished members a cancel of the parent cancels.
-- Returns id, created (1 new | 0 existing), status.
-- Enqueue, in three parts so that one call can create many runs of one
-- workflow (enqueue_runs.lua) as cheaply as possible, and one run
-- (enqueue_run.lua, fire_cron.lua) exactly the same way:
--   enqueue_plan   what every run of the call shares: status, keys, scores,
--                  the fields of the run hash but its id and input
--   enqueue_one    one run's hash and idempotency key (never over an existing
--                  run; an existing key returns its run)
--   enqueue_flush  the indexes of every run made, one ZADD per index
-- `a`: workflow, queue, max_attempts, run_at (0 = now), idem_ttl, parent,
-- cron_id, max_concurrency, timeout_ms ('' = none), priority (checked 0..9),
-- link (the parent awaits the runs), traceparent, tracestate (optional).
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
      if p.children then redis.pcall('SADD', p.children, existing) end
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
  if p.status ~= 'scheduled' and redis.call('ZCARD', p.queue_key) == #made then
    -- Ring only when the set was empty: the worker a bell wakes rings again
    -- while work remains (claim_run.lua), so a burst wakes every idle worker
    -- without a bell per run.
    ring(tag, q)
  end
  p.made, p.idems = {}, {}
end

-- One run (enqueue_run, fire_cron): returns id, created (1/0), status ('' when
-- the run existed already).
local function enqueue(tag, a, now)
  local p = enqueue_plan(tag, a, now)
  local id, created = enqueue_one(p, a.id, a.input_json, a.idem_key)
  if created == 0 then return id, 0, '' end
  enqueue_flush(p)
  return id, 1, p.status
end

-- A ready entry whose run record is unusable fails with a clear error instead
-- of reaching a worker (whose reply parsing it would break) or being dropped
-- silently. A record with an unknown or missing status is reset to `queued`
-- first so that finalize applies (its index entry is dropped).
local KNOWN_STATUS = { scheduled = true, queued = true, running = true, succeeded = true,
  failed = true, canceled = true, suspended = true }

local function fail_corrupt(tag, id, why, now)
  local run = k_run(tag, id)
  local old = redis.call('HGET', run, 'status')
  if not old or not KNOWN_STATUS[old] then
    if old then redis.call('ZREM', k_status(tag, old), id) end
    redis.call('HSET', run, 'status', 'queued')
  end
  finalize(tag, id, 'failed', 'errorJson', cjson.encode({ type = 'CorruptRecord',
    message = 'run record is corrupted: ' .. why, retryable = false }), now, '')
  return nil
end

-- True when a stored integer field is present but not an integer.
local function bad_int(v)
  return v ~= nil and v ~= false and v ~= '' and not string.match(v, '^%d+$')
end

-- Rate limit of a workflow (its synced `rateLimit`, "<count>/<s|m|h>"; see
-- redflow_mp/ratelimit.py): a sliding window over the starts of its runs, kept
-- as a log under rate:<wf> (ZSET, member per start, score = its start time in
-- server ms, past or reserved). No window of one period holds more than
-- `count` starts: a start at `s` needs the count-th latest logged one at or
-- before s - period. Every call logs one start, now or at the earliest time the
-- window allows (a reservation: a run over the limit gets the next free start
-- instead of polling for one). Entries a period old are trimmed; the key
-- expires a period after its last start. Returns nil when the start is now,
-- else the ms it is reserved for.
local RATE_PERIODS = { s = 1000, m = 60000, h = 3600000 }

-- `spec`: the workflow's rateLimit if read already (false = none), nil: read here.
local function rate_slot(tag, wf, id, now, spec)
  if spec == nil then spec = redis.call('HGET', k_wf(tag, wf), 'rateLimit') end
  if not spec or spec == '' then return nil end
  local count, unit = string.match(spec, '^(%d+)/([smh])$')
  count = tonumber(count)
  if not count or count < 1 then return nil end
  local period = RATE_PERIODS[unit]
  local key = k_rate(tag, wf)
  local r = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', int_str(now - period))
  if failed(r) then return nil, key, r end  -- of another type: nothing written
  local logged = redis.call('ZCARD', key)
  local slot = now
  if logged >= count then
    local nth = redis.call('ZRANGE', key, logged - count, logged - count, 'WITHSCORES')
    local at = tonumber(nth[2]) + period
    if at > slot then slot = at end
  end
  redis.call('ZADD', key, int_str(slot), id .. ':' .. int_str(now) .. ':' .. int_str(slot))
  local last = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) or slot
  redis.call('PEXPIRE', key, int_str(last - now + period + 1))
  if slot <= now then return nil end
  return slot
end

-- The claim's rate gate for queued run `id` of `wf` on queue `q`: true when the
-- run was moved to `scheduled` until its reserved start (the promoter brings it
-- back then; it waits without a process and without Redis traffic). A run that
-- comes back with its reservation (`reserved`, its rateSlot field) starts
-- without taking another one. false, key, error: a key it needs (rate:<wf>,
-- the scheduled set, due-queues) is of another type; the run was not moved.
local function rate_deferred(tag, id, wf, q, reserved, now, spec)
  if reserved and reserved ~= '' then
    redis.call('HDEL', k_run(tag, id), 'rateSlot')
    return false
  end
  local slot, bad, e = rate_slot(tag, wf, id, now, spec)
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

-- Ids dropped by `take` because their run record is gone, reported to the caller
-- so that it can say so in its log.
local DROPPED = {}

-- Take the run `id` that the caller just removed from the ready set of `q`
-- (where it had `score`): check it, gate it on max_concurrency, lease it and
-- mark it running. Returns a reply table for a claimed run, or nil when the
-- id was skipped (stale, canceled, corrupted or parked).
local function take(tag, id, q, score, token, lease_ms, now)
  local run = k_run(tag, id)
  -- pcall: a foreign key of another type under the run's name must not fail the
  -- whole claim (WRONGTYPE); it is dropped like a missing hash.
  local f = redis.pcall('HMGET', run, 'status', 'workflow', 'cancelRequestedAt', 'maxConcurrency',
    'inputJson', 'attempt', 'maxAttempts', 'createdAt', 'parentRunId', 'timeoutMs', 'cronId',
    'startedAt', 'queue', 'availableAt', 'rateSlot')
  if f.err or not (f[1] or f[2] or f[5]) then
    -- Hash gone (a stale entry) or not a hash: drop the entry, never execute it.
    DROPPED[#DROPPED + 1] = q .. ' ' .. id
    return nil
  end
  if not f[1] or not KNOWN_STATUS[f[1]] then
    return fail_corrupt(tag, id, 'unknown status ' .. tostring(f[1] or '(none)'), now)
  end
  -- A run that is no longer queued (canceled, or a stale duplicate entry):
  -- drop the entry, never execute it.
  if f[1] ~= 'queued' then return nil end
  local wf = f[2]
  if not wf or wf == '' or not f[5] then
    return fail_corrupt(tag, id, 'missing its workflow or inputJson field', now)
  end
  for i = 6, 12 do  -- attempt, maxAttempts, createdAt, timeoutMs, startedAt (not 9, 11)
    if i ~= 9 and i ~= 11 and bad_int(f[i]) then
      local names = { 'attempt', 'maxAttempts', 'createdAt', '', 'timeoutMs', '', 'startedAt' }
      return fail_corrupt(tag, id, 'field ' .. names[i - 5] .. ' is not an integer', now)
    end
  end
  if f[3] and f[3] ~= '' then
    finalize(tag, id, 'canceled', 'errorJson', '', now, '')
    return nil
  end
  local running = k_running(tag, wf)
  -- A key this claim needs of another type (wf-running:<wf>, workflow:<wf>,
  -- wf-waiting:<wf>, rate:<wf>, a scheduled set, due-queues, leases): the run
  -- goes back to its ready set a minute later (never stranded, and the other
  -- runs pass first) and the call fails naming the key (see `failed`).
  local woken = false
  local function back(key, e)
    if not woken then redis.call('SREM', running, id) end
    redis.call('ZADD', k_ready(tag, q), int_str(tonumber(score) + 60000), id)
    refuse(key, e)
  end
  -- Slot first: SADD answers 0 for a woken suspended run (it holds its slot and
  -- passes, and its resume is no new start for the rate limit). Another run
  -- passes when the set, with it, holds at most max_concurrency, else gives it back.
  local added = redis.pcall('SADD', running, id)
  if failed(added) then
    woken = true  -- nothing added: nothing to take back
    back(running, added)
  end
  woken = added == 0
  if not woken then
    local m = redis.pcall('HMGET', k_wf(tag, wf), 'maxConcurrency', 'rateLimit')
    if failed(m) then back(k_wf(tag, wf), m) end
    local limit = tonumber(m[1]) or tonumber(f[4]) or 1
    if limit < 1 then limit = 1 end
    if redis.call('SCARD', running) > limit then
      local parked = redis.pcall('ZADD', k_waiting(tag, wf), score, id)
      if failed(parked) then back(k_waiting(tag, wf), parked) end
      redis.call('SREM', running, id)
      redis.pcall('SADD', tag .. ':parked', wf)
      return nil
    end
    local deferred, bad, e = rate_deferred(tag, id, wf, f[13] or q, f[15], now, m[2])
    if bad then back(bad, e) end
    if deferred then
      redis.call('SREM', running, id)
      return nil
    end
  end
  -- A run that never started has no steps: skip the read. Read before the run
  -- changes: a steps key of another type fails the run as corrupted (it cannot
  -- replay), instead of failing every claim of it after marking it running.
  local steps = {}
  if f[12] and f[12] ~= '' then
    steps = redis.pcall('HGETALL', k_steps(tag, id))
    if failed(steps) then
      return fail_corrupt(tag, id, 'its steps key ' .. k_steps(tag, id) .. ' is not a hash', now)
    end
  end
  local leased = redis.pcall('ZADD', k_leases(tag), int_str(now + lease_ms), id)
  if failed(leased) then
    -- `leases` of another type: put the run back where it was (at its own score:
    -- no claim can pass while it is broken) and fail the call.
    if not woken then redis.call('SREM', running, id) end
    redis.call('ZADD', k_ready(tag, q), score, id)
    refuse(k_leases(tag), leased)
  end
  local started = f[12]
  local ns = ms(now)
  if not started or started == '' then
    started = ns
    redis.call('HSET', run, 'status', 'running', 'lease', token, 'startedAt', ns,
      'updatedAt', ns, 'attemptStartedAt', ns)
  elseif woken then  -- a resume: the attempt started at its first execution
    redis.call('HSET', run, 'status', 'running', 'lease', token, 'updatedAt', ns)
  else
    redis.call('HSET', run, 'status', 'running', 'lease', token, 'updatedAt', ns,
      'attemptStartedAt', ns)
  end
  move_status(tag, id, 'queued', 'running', now)
  return { id, wf, f[13] or q, f[5], f[6] or '1', f[7] or '1', f[8] or '0', f[9] or '',
    f[10] or '', f[11] or '', tostring(started), steps, f[14] or '' }
end
