-- _lib.lua: helpers shared by every script (luafiles.py prepends the ones a script
-- uses, from this file and _lib_runs.lua, which comes after it).
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
--   run:<child>:waiters names the parents), `timers` its wake-up time, and
--   wf-suspended:<wf> lists it while it is suspended (the deadlock rule's count).
-- * An idempotency key has no expiry while its run is unfinished; when the run
--   finishes, the key (if it still names the run) expires at
--   max(createdAt + ttl, now + 1 s).

local BELL_CAP = 64
-- The most runs `fallback-runs` lists (the newest; enqueue trims it, see _lib_runs.lua).
local FALLBACK_CAP = 10000
local TERMINAL = { succeeded = true, failed = true, canceled = true }
-- TERMINAL[s] for the helpers of the hot path: a table constructor per EVALSHA
-- (TERMINAL's) costs about 3,000 redis-server instructions, this expression
-- (written out at each call: luasrc.inline_helpers) nothing.
local function is_terminal(s) return s == 'succeeded' or s == 'failed' or s == 'canceled' end
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
  -- exact (below 2^53); '%d' formats it as an integer (Lua 5.1 casts to long),
  -- about 1,200 redis-server instructions fewer than cutting and padding the
  -- digits of the microseconds with string.sub/rep (benchmarks.script_instr)
  NOW = t[1] * 1000 + math.floor(t[2] / 1000)
  NOW_S = string.format('%d', NOW)
  return NOW
end

local function k_run(tag, id) return tag .. ':run:' .. id end
local function k_steps(tag, id) return tag .. ':run:' .. id .. ':steps' end
local function k_leases(tag) return tag .. ':leases' end
local function k_status(tag, status) return tag .. ':runs:status:' .. status end
-- Finished runs whose terminal status index refused them (of another type):
-- retention sweeps them from here (sweep_runs.lua), so none outlives it.
local function k_unindexed(tag) return tag .. ':runs:unindexed' end
local function k_ready(tag, q) return tag .. ':q:' .. q .. ':ready' end
local function k_scheduled(tag, q) return tag .. ':q:' .. q .. ':scheduled' end
local function k_bell(tag, q) return tag .. ':q:' .. q .. ':bell' end
local function k_due_queues(tag) return tag .. ':due-queues' end
-- runs put on `default` for want of their workflow's metadata (adopt_runs.lua)
local function k_fallback_runs(tag) return tag .. ':fallback-runs' end
-- Queues whose ready set may hold runs -> a lower bound of its head's score (see
-- mark_ready), and a worker's
-- registered queue list (claim_run.lua, queueset.py).
local function k_ready_queues(tag) return tag .. ':ready-queues' end
local function k_qset(tag, digest) return tag .. ':qset:' .. digest end
local function k_wf(tag, wf) return tag .. ':workflow:' .. wf end
local function k_wf_runs(tag, wf) return tag .. ':workflow-runs:' .. wf end
local function k_running(tag, wf) return tag .. ':wf-running:' .. wf end
local function k_waiting(tag, wf) return tag .. ':wf-waiting:' .. wf end
-- the suspended runs holding a slot of wf-running:<wf> (the deadlock rule's count)
local function k_wf_suspended(tag, wf) return tag .. ':wf-suspended:' .. wf end
local function k_timers(tag) return tag .. ':timers' end
local function k_awaits(tag, id) return tag .. ':run:' .. id .. ':awaits' end
local function k_waiters(tag, id) return tag .. ':run:' .. id .. ':waiters' end
local function k_children(tag, id) return tag .. ':run:' .. id .. ':children' end
-- the other parents that found run <id> by its idempotency key and await it
-- (run_workflow(..., idempotency_key=)): retention keeps it while one of them waits
local function k_parents(tag, id) return tag .. ':run:' .. id .. ':parents' end
-- canceled runs whose children (run:<id>:children) may not all be canceled yet
local function k_cascades(tag) return tag .. ':cascades' end
local function k_evnames(tag, id) return tag .. ':run:' .. id .. ':events' end
local function k_evkeys(tag, id) return tag .. ':run:' .. id .. ':event-keys' end
-- the keys of k_evkeys in the order sent, oldest first (the window, send_event.lua)
local function k_evkey_order(tag, id) return tag .. ':run:' .. id .. ':event-key-order' end
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
local function k_rate_started(tag, wf) return tag .. ':rate-started:' .. wf end
local function k_idem(tag, wf, key)
  return tag .. ':idempo:' .. string.len(wf) .. ':' .. wf .. ':' .. string.len(key) .. ':' .. key
end

-- An integral number as exact decimal digits. Lua's tostring (and `..`) keeps
-- 14 significant digits: a ready score (15 digits) would come out rounded.
local function int_str(n) return string.format('%.0f', n) end

-- tonumber(v) when it is a finite number, else nil. A stored field is read with
-- `finite(f) or default`: tonumber alone reads 'nan' and 'inf' (strtod) from a
-- damaged record, and they reached a ZADD score or int_str as 'nan'; the call
-- then raised a Lua error at every retry or put-back of the run.
local function finite(v)
  local n = tonumber(v)
  if n and n == n and n > -math.huge and n < math.huge then return n end
  return nil
end

-- A step record was written over `prev` (false: a new step): keep the run's
-- `stepBytes` (names and records of run:<id>:steps) for the claim, which carries
-- the records in its reply only while they are few and small (take, _lib_runs.lua).
-- pcall: a field that is not a number must not fail the write (the claim then
-- goes by the count of records alone).
local function count_step_bytes(run, name, prev, record)
  local delta = #record - (prev and #prev or -#name)
  if delta ~= 0 then redis.pcall('HINCRBY', run, 'stepBytes', delta) end
end

-- int_str(n), without formatting when n is the time now_ms() returned last.
local function ms(n) if n == NOW then return NOW_S end return int_str(n) end

-- The ready (and wf-waiting) score of a run of `priority` (0..9, else clamped;
-- missing = 0) that became ready at `t` ms.
local function ready_score(priority, t)
  local p = math.floor(finite(priority) or 0)
  if p < 0 then p = 0 elseif p > 9 then p = 9 end
  return int_str((9 - p) * BAND + (finite(t) or 0))
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
-- Redis 7 takes an error table (the reply is its `err`, code first); Redis 6.2's
-- error handler concatenates what it is given, so it needs the text (the reply
-- then reads "ERR Error running script ...: <text>"; the client looks for the
-- code inside it).
local function raise(msg)
  if redis.REDIS_VERSION then error({ err = msg }) end
  error(msg)
end
local function refuse(key, e)
  local msg = type(e) == 'table' and e.err or tostring(e)
  if not string.find(msg, 'WRONGTYPE', 1, true) then raise(msg) end
  raise('WRONGTYPE key ' .. key .. ' holds another type of value than redflow-mp ' ..
    'writes there (written by hand or by another program?): delete or rename it')
end

-- redis.call(...) on `key`, whose value of another type fails the call naming
-- `key` (refuse) instead of Redis' bare WRONGTYPE: for reads placed before a
-- script's first write, so such a refusal changes nothing.
local function call_on(key, ...)
  local r = redis.pcall(...)
  if failed(r) then refuse(key, r) end
  return r
end

-- A run of ready score `score` was placed in the ready set of `q`: `ready-queues`
-- lists `q` at a score <= its head's (LT: only ever lowered, or added). Every
-- write that places a run in a ready set calls this in the same script, so a
-- non-empty ready set is always listed at a lower bound of its head (a pop only
-- raises the head). Claims of many queues walk it in that order, tighten the
-- bounds they read and remove the queues they find empty (claim_run.lua), so
-- it stays about as small as the number of queues holding runs. An enqueue of
-- priority 0 into a non-empty set skips it: its score (now) is past every
-- score there. An index of another type is left alone (the claims of many
-- queues then read every queue served; keycheck.py names it).
local function mark_ready(tag, q, score)
  redis.pcall('ZADD', k_ready_queues(tag), 'LT', score, q)
end

-- Wake one idle worker of `q`. The list is capped: bells only wake blocked
-- workers, busy ones claim straight from the ready set. A bell key of another
-- type (written by hand or by another program) is left alone: ringing comes
-- after the script's writes, and an error there would half-apply them.
local function ring(tag, q)
  -- A ring says `q` holds a ready run: listed if it was not (bound 0: a claim reads
  -- its head), its bound left alone if it was (mark_ready sets it).
  redis.pcall('ZADD', k_ready_queues(tag), 'NX', 0, q)
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
    if is_terminal(old) then redis.pcall('ZREM', k_unindexed(tag), id) end  -- resumed
  end
  local added = redis.pcall('ZADD', k_status(tag, new), ms(now), id)
  -- A terminal index of another type (a neighbour's key): retention would never
  -- find this run, even once the key is gone; runs:unindexed keeps it for it.
  if is_terminal(new) and failed(added) then
    redis.pcall('ZADD', k_unindexed(tag), ms(now), id)
  end
end

-- True when `token` holds the lease of run `id`: the run hash names it and the
-- run is still in `leases`. An expired lease stays held until someone acts on
-- the expiry: the reaper's requeue (or any other end of the run) removes the
-- run from `leases`, and a new claim writes another token, atomically. So a
-- holder that could not renew through a Redis stall or restart goes on once
-- Redis is back, unless the run was taken over meanwhile (the reaper holds
-- off after such a gap: reap_runs.lua). `now` is unused (kept for callers).
-- (suspend_run, consume_event: read before any write; a run hash or `leases` of
-- another type fails the call naming the key)
local function lease_held(tag, id, token, now)
  if token == '' then return false end
  local run = k_run(tag, id)
  if call_on(run, 'HGET', run, 'lease') ~= token then return false end
  local leases = k_leases(tag)
  return call_on(leases, 'ZSCORE', leases, id) ~= false
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

-- Rings that a claim in the same call may make needless: while a claim_run call
-- that also claims is finishing its caller's run, the slot its finish frees
-- releases a parked run whose bell waits here ({queue, id}, ...): the claim that
-- follows usually takes that very run (it sits at the front of its band), and a
-- ring would wake an idle worker only to find the workflow at its limit again
-- (with max_concurrency = 1 and several workers, one futile claim and one
-- parked run per run). After its claim the call rings for each run still ready
-- (ring_later_flush). nil: ring at once (every other script); 0: defer, none
-- deferred yet (the table is made by the first: a table per call costs an EVALSHA
-- about 400 redis-server instructions, allocation and collection).
local RING_LATER = nil

local function ring_later_flush(tag)
  local later = RING_LATER
  RING_LATER = nil
  if not later or later == 0 then return end
  for i = 1, #later, 2 do
    if redis.pcall('ZSCORE', k_ready(tag, later[i]), later[i + 1]) then
      ring(tag, later[i])
    end
  end
end

-- The helpers of the rarer exits (a freed slot releasing a parked run, a finished child
-- waking its parents, a retry's or put-back's history entry, a run with an idempotency
-- key): exit_helpers() makes them on first use and returns them by name (a caller
-- writes `exit_helpers().wake(...)`). An EVALSHA makes every helper of its text anew on
-- each call (luasrc.py): made up front, these and the other makers' (retry_helpers,
-- claim_faults) cost a steady-state claim_run about 2 % of its redis-server
-- instructions for nothing (docs/benchmarks.md, "Lazy helpers, stop 40"; the rate gate
-- does the same, _lib_rate.lua). The function library (whose locals outlive a call)
-- makes them once per load: EXIT_HELPERS keeps them (none holds per-call state).

-- Parents a finish notifies in its own script (notify_waiters): about 2 ms of
-- work. A run awaited by more (run_workflow with one idempotency key shared by
-- many parents) leaves the rest to the timer waker, a slice at a time: a finish
-- that woke 100,000 parents in one script held Redis for about 2 s.
local NOTIFY_SLICE = 100

-- Each execution of a run that ends (finish, retry, put back) has one entry in its
-- history: {"attempt", "startedAt" (this execution's claim), "finishedAt",
-- "outcome" (succeeded | failed | canceled | retried | requeued), "errorJson"
-- (the error as stored, a string), "cause" (why a worker lost it)}. Executions
-- that a retry or a put-back ended are appended to run:<id>:attempts (capped at
-- the newest ATTEMPTS_CAP). The execution a finish ends is the run's last: its
-- entry is implied by the run hash (attempt, attemptStartedAt or startedAt,
-- finishedAt, status, and errorJson when `finalAttempt` is 'e'), marked by the
-- field `finalAttempt` ('1': no error), and readers add it (queries.get_run);
-- most runs end on their first execution, so they never write the list (a
-- key, about 100 bytes, and 3 us of Redis time less per finished run). A resume
-- writes the implied entry out (write_final_attempt) before the hash changes.
-- record_attempt is called only for a run leaving `running`, before its attempt
-- field changes. Numbers are written as exact digits.
local ATTEMPTS_CAP = 100

local EXIT_HELPERS = nil
local function exit_helpers()
  if EXIT_HELPERS then return EXIT_HELPERS end
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
        local score = ready_score(f[3], f[4])
        if failed(redis.pcall('ZADD', k_ready(tag, f[2]), score, id)) then
          redis.call('ZADD', waiting, top[2], id)  -- its ready set is of another type: it waits
          break
        end
        mark_ready(tag, f[2], score)  -- now (not with the ring): a claim in this call sees it
        if RING_LATER then
          if RING_LATER == 0 then RING_LATER = {} end
          RING_LATER[#RING_LATER + 1] = f[2]
          RING_LATER[#RING_LATER + 1] = id
        else
          ring(tag, f[2])
        end
        released = released + 1
      end
    end
    if released > 0 and redis.call('ZCARD', waiting) == 0 then
      redis.pcall('SREM', tag .. ':parked', wf)
    end
    return released
  end

  -- suspended -> queued: back to its ready set near the front of its priority
  -- band (its createdAt), still counted in wf-running:<wf>; its timer and awaited
  -- set go. Returns true when the run was suspended (and is now queued). The
  -- awaited set goes by UNLINK (here, at a finish and at a suspend): a fan-out's
  -- woken by a failed child or its deadline, or canceled, still names every
  -- child left (200,000: 44 ms of Redis to free with DEL, now off the main thread).
  local function wake(tag, id, now)
    local run = k_run(tag, id)
    local f = redis.pcall('HMGET', run, 'status', 'queue', 'priority', 'createdAt', 'workflow')
    if failed(f) or f[1] ~= 'suspended' or not f[2] then return false end
    -- Placed first: a ready set of another type leaves it suspended, tried again
    -- by its timer a minute later.
    local score = ready_score(f[3], f[4])
    if failed(redis.pcall('ZADD', k_ready(tag, f[2]), score, id)) then
      redis.pcall('ZADD', k_timers(tag), int_str(now + 60000), id)
      return false
    end
    mark_ready(tag, f[2], score)
    redis.call('HSET', run, 'status', 'queued', 'updatedAt', now, 'wokenAt', now)
    redis.call('HDEL', run, 'wait', 'waitEvents')
    move_status(tag, id, 'suspended', 'queued', now)
    if f[5] then redis.pcall('SREM', k_wf_suspended(tag, f[5]), id) end
    redis.pcall('ZREM', k_timers(tag), id)
    redis.call('UNLINK', k_awaits(tag, id))
    ring(tag, f[2])
    return true
  end

  -- Run `id` finished with `status`: parent `parent` loses it from its awaited
  -- set; it wakes when that set is now empty, or at once when the run did not
  -- succeed (its wait step fails). Returns true when it woke. A parent still
  -- running is registering its wait a page at a time (await_children.lua): one
  -- that did not succeed marks it `awaitFailed`, which its final suspend reads.
  local function notify_parent(tag, parent, id, now, status)
    local awaits = k_awaits(tag, parent)
    local gone = redis.pcall('SREM', awaits, id)
    -- (an awaited set of another type: the parent wakes and reads its children)
    if failed(gone) or (gone == 1
      and (status ~= 'succeeded' or redis.call('SCARD', awaits) == 0)) then
      if wake(tag, parent, now) then return true end
      if gone == 1 and status ~= 'succeeded' then
        local run = k_run(tag, parent)
        if redis.pcall('HGET', run, 'status') == 'running' then
          redis.pcall('HSET', run, 'awaitFailed', id)
        end
      end
    end
    return false
  end

  -- Run `id` finished with `status`: notify up to `limit` of the parents suspended
  -- on it (run:<id>:waiters); when more are left, `id` goes in `timers` (due now)
  -- and wake_timers.lua notifies the next slice. Returns (parents notified,
  -- parents woken).
  local function notify_waiters(tag, id, now, status, limit)
    local waiters = k_waiters(tag, id)
    local n = redis.pcall('SCARD', waiters)
    if failed(n) then
      -- Of another type (overwritten after its parents suspended): the parents it
      -- named are unknown here; the parent that started the run (run_workflow) is
      -- still looked at (it used to wait forever).
      local parent = redis.call('HGET', k_run(tag, id), 'parentRunId')
      if parent and parent ~= '' and notify_parent(tag, parent, id, now, status) then
        return 1, 1
      end
      return 1, 0
    end
    if n == 0 then return 0, 0 end
    local woken = 0
    local parents = redis.call('SPOP', waiters, limit)
    for _, parent in ipairs(parents) do
      if notify_parent(tag, parent, id, now, status) then woken = woken + 1 end
    end
    if n > limit then redis.pcall('ZADD', k_timers(tag), ms(now), id) end  -- (see `failed`)
    return #parents, woken
  end

  -- `pre`: the run's attempt, attemptStartedAt, startedAt if read already (else nil).
  local function record_attempt(tag, id, outcome, error_json, cause, now, pre)
    local f = pre or redis.call('HMGET', k_run(tag, id), 'attempt', 'attemptStartedAt', 'startedAt')
    local started = finite(f[2]) or finite(f[3]) or now
    local entry = '{"attempt":' .. int_str(finite(f[1]) or 1) .. ',"startedAt":' ..
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

  -- The run finished: its idempotency key (if it still names the run) now expires
  -- at createdAt + ttl, but not before a second from now (a caller racing the
  -- finish still finds the run), nor after ttl from now: a run created at a Redis
  -- clock ahead of now (set back since: NTP, a failover to a server whose clock
  -- is behind) kept its key, and a new run with it was refused, as long as the
  -- clock had been ahead on top of its TTL. A key of a run enqueued before
  -- keyspace v2 (no stored TTL) keeps the expiry it was created with.
  local function expire_idempotency(tag, id, wf, key, ttl, created, now)
    if not wf or not key or key == '' or not finite(ttl) then return end
    local idem = k_idem(tag, wf, key)
    if redis.pcall('GET', idem) == id then  -- (of another type: no key of this run)
      local at = (finite(created) or now) + finite(ttl)
      if at > now + finite(ttl) then at = now + finite(ttl) end
      if at < now + 1000 then at = now + 1000 end
      -- A huge TTL (1e17 s) would make PEXPIREAT fail half-way through a finish.
      if at > MAX_EXPIRE_AT then at = MAX_EXPIRE_AT end
      redis.call('PEXPIREAT', idem, int_str(at))
    end
  end
  EXIT_HELPERS = { release_parked = release_parked, wake = wake, notify_parent = notify_parent,
    notify_waiters = notify_waiters, record_attempt = record_attempt,
    expire_idempotency = expire_idempotency }
  return EXIT_HELPERS
end

-- Common exit from `running`: drop the lease entry and the concurrency slot; a
-- freed slot releases one parked run of the same workflow. `unleased`: the lease
-- entry went already (lease_check); `unparked`: wf-waiting:<wf> is known not to
-- exist (finalize's EXISTS).
local function leave_running(tag, id, wf, unleased, unparked)
  if not unleased then
    redis.pcall('ZREM', k_leases(tag), id)  -- of another type: it holds no lease
  end
  if wf and redis.pcall('SREM', k_running(tag, wf), id) == 1 and not unparked then
    exit_helpers().release_parked(tag, wf, 1)
  end
end

-- The finished run `id`'s implied last entry (see ATTEMPTS_CAP) goes to its list,
-- as record_attempt would have written it, and the mark goes: called before a
-- resume changes the fields the entry is read from.
local function write_final_attempt(tag, id)
  local run = k_run(tag, id)
  local f = redis.call('HMGET', run, 'finalAttempt', 'attempt', 'attemptStartedAt', 'startedAt',
    'finishedAt', 'status', 'errorJson')
  if not f[1] then return end
  local finished = finite(f[5]) or now_ms()
  local err = ''
  if f[1] == 'e' then err = f[7] or '' end
  exit_helpers().record_attempt(tag, id, f[6] or 'unknown', err, '', finished,
    { f[2], f[3], f[4] })
  redis.call('HDEL', run, 'finalAttempt')
end

-- The message is the terminal status, a wake-up for the waiting clients: they
-- read the run (anyone allowed the channel may publish on it; the output it
-- used to carry was taken as the run's result).
local function publish_done(tag, id, status)
  local message = status
  -- pcall: a user without the prefix's channels (an ACL change while workers
  -- run) loses the notification, not the finish written before it (a waiter
  -- reads the run again every RESULT_RECHECK_S).
  redis.pcall('PUBLISH', tag .. ':run-done:' .. id, message)
end

-- running|queued|scheduled|suspended -> terminal. `field` is 'outputJson' or 'errorJson'.
-- A run whose cancellation was requested always ends `canceled` (a succeeded
-- output is still stored for inspection). `done_token` ('' = none) is the
-- lease token of the caller that applied this finish (see already_done).
-- What a fenced finish reads of run hash `run` (lease check, finalize), in one
-- HMGET: f[1] status, f[2] cancelRequestedAt, f[3] lease, f[4] workflow, f[5]
-- idempotencyKey. The fields only some finishes need are read by those alone
-- (HGET/HMGET): doneToken by a failed lease check, cancelReason by a cancel,
-- idempotencyTtlMs and createdAt by a run with a key. Each field an HMGET asks
-- for walks the run's listpack, a missing one all of it: asking for these four
-- (missing on most runs) was about 7 % of a finish's instructions.
-- pcall: a run record replaced by a key of another type (another program writing
-- into the prefix) reads as a missing run (lease lost), instead of failing every
-- resend of the holder's finish, which then never claimed again.
local function finish_fields(run)
  local f = redis.pcall('HMGET', run, 'status', 'cancelRequestedAt', 'lease', 'workflow',
    'idempotencyKey')
  if type(f) ~= 'table' or f.err then return {} end
  return f
end

-- lease_held and already_done over finish_fields `f`: true, or false and the
-- run's status when `token`'s finish was the last one applied (else nil).
-- `unlease` (a terminal finish: finalize follows): the run's `leases` entry goes
-- with the check, one ZREM whose reply is the check instead of a ZSCORE and the
-- ZREM of leave_running (then a third value, true: tell finalize `unleased`).
-- Only there: a retry or a put-back may fail half-way (a ready or scheduled set
-- of another type) and would leave a running run out of `leases`, which the
-- reaper never finds; finalize's first write after the check is the run hash's
-- HSET (read as a hash just before), so the run leaves `leases` only in a call
-- that makes it terminal. Only on Redis 7 (redis.REDIS_VERSION; our scripts
-- carry flags there, so an out-of-memory server refuses them before they
-- start): Redis 6.2 refuses a script's first write that may grow memory, and
-- lets every later one through, so a ZREM first let the whole finish through
-- an out-of-memory server instead of refusing it whole.
local function lease_check(tag, id, f, token, now, unlease)
  if token == '' then return false, nil end
  -- held as in lease_held: the token named and the run still in `leases`
  if f[3] == token then
    if unlease and redis.REDIS_VERSION then
      if redis.call('ZREM', k_leases(tag), id) == 1 then return true, nil, true end
    elseif redis.call('ZSCORE', k_leases(tag), id) then
      return true, nil
    end
  end
  if not f[1] then return false, nil end  -- no run (or not a hash): nothing applied
  return false, (redis.call('HGET', k_run(tag, id), 'doneToken') == token and f[1]) or nil
end

-- `pre`: finish_fields of the run when the caller read them already (else nil);
-- `unleased`: the caller's lease_check removed the run's `leases` entry.
local function finalize(tag, id, status, field, payload, now, done_token, pre, unleased)
  local run = k_run(tag, id)
  local f = pre or finish_fields(run)
  local old = f[1]
  if not old or is_terminal(old) then return old or '' end
  if f[2] and f[2] ~= '' and status ~= 'canceled' then
    if status == 'succeeded' and payload ~= '' then
      redis.call('HSET', run, 'outputJson', payload)
    end
    status = 'canceled'
    payload = ''
  end
  if status == 'canceled' and payload == '' then
    local reason = redis.call('HGET', run, 'cancelReason') or ''
    if reason ~= '' then reason = ': ' .. reason end
    field = 'errorJson'
    payload = cjson.encode({ type = 'RunCanceledError', message = 'run was canceled' .. reason,
      retryable = false })
  end
  local ns = ms(now)
  if old == 'running' and payload ~= '' and done_token and done_token ~= '' then
    -- a worker's finish (the hot path): the fields below, straight to HSET (no table)
    local final = '1'
    if field == 'errorJson' then final = 'e' end
    redis.call('HSET', run, 'status', status, 'finishedAt', ns, 'updatedAt', ns, field, payload,
      'doneToken', done_token, 'finalAttempt', final)
  else
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
      -- This execution's history entry is implied by the hash (see ATTEMPTS_CAP):
      -- its error is the errorJson written here, or none.
      fields[#fields + 1] = 'finalAttempt'
      if field == 'errorJson' and payload ~= '' then
        fields[#fields + 1] = 'e'
      else
        fields[#fields + 1] = '1'
      end
    end
    redis.call('HSET', run, unpack(fields))
  end
  move_status(tag, id, old, status, now)
  -- The cancel cascade owed, recorded with the cancel (cascade.py ends it; the
  -- supervisor finishes one whose canceller died): a pcall, see `failed`. Its
  -- generation (`cascadeGen`, counted) tells a walk's end that a resume and a
  -- second cancel recorded another one meanwhile (forget_cascades.lua).
  if status == 'canceled' and redis.call('EXISTS', k_children(tag, id)) == 1 then
    redis.pcall('ZADD', k_cascades(tag), ns, id)
    redis.pcall('HINCRBY', run, 'cascadeGen', 1)
  end
  -- Every unfinished status may hold a slot: running, suspended, and queued
  -- after a wake (no-ops otherwise). The usual run has no parked run of its
  -- workflow to release and no parent waiting on it: one EXISTS of both keys
  -- (0: neither; else each is asked as before; a key of another type exists).
  local quiet = f[4] and redis.call('EXISTS', k_waiting(tag, f[4]), k_waiters(tag, id)) == 0
  leave_running(tag, id, f[4], unleased, quiet)
  if old == 'suspended' then
    if f[4] then redis.pcall('SREM', k_wf_suspended(tag, f[4]), id) end
    redis.call('HDEL', run, 'wait', 'waitEvents')
    redis.pcall('ZREM', k_timers(tag), id)
    redis.call('UNLINK', k_awaits(tag, id))
  end
  if not quiet then
    exit_helpers().notify_waiters(tag, id, now, status, NOTIFY_SLICE)
  end
  if f[5] and f[5] ~= '' then  -- a key: its TTL and the run's createdAt
    local t = redis.call('HMGET', run, 'idempotencyTtlMs', 'createdAt')
    exit_helpers().expire_idempotency(tag, id, f[4], f[5], t[1], t[2], now)
  end
  publish_done(tag, id, status)
  return status
end
