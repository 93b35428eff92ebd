-- suspend_run: the lease holder's handler reached a durable wait whose condition
-- did not hold. Decide, atomically, whether it holds now; if not, suspend the run.
--
-- KEYS[1]  run:<id>
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  lease token
-- ARGV[4]  the wait, JSON ({"children":[..],"events":[..],"wakeAt":ms,"steps":[..]}),
--          stored in the run's `wait` field for readers; the event names also
--          in `waitEvents` ("<lease token> <JSON list>", nothing after the space
--          for none), which send_event reads. Paged (below): the wait names no
--          child; `childrenAwaited` is their number, run:<id>:awaits holds them
-- ARGV[5]  wake-up time ms ('' = none): a sleep's end or a wait's deadline
-- ARGV[6]  number n of awaited child run ids; ARGV[7 .. 6+n] the ids
-- ARGV[7+n ..] awaited event names
-- Paged (a wait on more than SUSPEND_PAGE children, wait_scripts.py): ARGV[6] =
-- 'paged', ARGV[7] = '<recheck><own>' (each 0|1, from the pages), ARGV[8 ..] the
-- event names. The children were registered by await_children.lua, a page a
-- call, under this token (the run's awaitsToken): run:<id>:awaits holds those
-- still unfinished, and awaitFailed marks one that failed or was canceled since
-- its page. The decision reads those, not each child: O(1) in the children.
-- Reply: { 'resume' }     the condition holds now (time reached, an awaited event
--                         is pending, every awaited child finished, or one of
--                         them failed or was canceled), or suspending would
--                         deadlock its own workflow (below): the caller
--                         keeps its lease and executes the run again at once
--        { 'suspended' }  running -> suspended: lease entry gone (the process is
--                         free), slot kept in wf-running, wake-ups registered
--                         (run:<id>:awaits + each child's waiters, `timers`)
--        { 'canceled' }   a cancel was requested: the run ended canceled instead
--        { 'lease-lost' } the lease is not ours | { status } this token's suspend
--                         was already applied (a resend after a lost reply)
-- A child whose id names another shard (shards > 1) and whose record is not in
-- this shard (a re-sharded run keeps its id) is taken as unfinished unless
-- run:<id>:kicked records its finish; the run then also gets a timer
-- XSHARD_RECHECK_MS ahead (or its own wake-up time when earlier): woken, it
-- reads such children again and suspends again if they still run.
-- Invariant: no lost wake-up. A child's finish (finalize) and send_event are
-- scripts too, so each happens wholly before this check (seen here: resume) or
-- wholly after the suspension (they find the run suspended and wake it).
-- Up to this many runs in the workflow's slot set the deadlock rule reads each
-- holder's status; past it, it counts them: wf-suspended:<wf> holds the
-- suspended runs that hold a slot (written here, removed by `wake` and
-- `finalize`), and every other holder is suspended when it holds as many as the
-- slot set less this run (as _DEADLOCK_SCAN_LIMIT in childwaits.py: the two must
-- agree, or a run would be resumed and suspended in turn).
local DEADLOCK_SCAN_LIMIT = 256
local tag = ARGV[1]
local id = ARGV[2]
local token = ARGV[3]
local now = now_ms()
if not lease_held(tag, id, token, now) then
  return { already_done(tag, id, token) or 'lease-lost' }
end
local run = KEYS[1]
local paged = ARGV[6] == 'paged'
-- Paged: every decision but a suspension drops the awaited set the pages built,
-- off the main thread (no one's once this call decided: a run resumed registers
-- again or suspends on something else, each starting over). Left behind by an
-- early resume (deadline reached, an event pending, the deadlock rule), 200,000
-- members stayed until the run's retention.
local function resume()
  -- (and the awaitFailed mark the pages' children left: read now, or stale)
  if paged then redis.call('UNLINK', k_awaits(tag, id)) redis.call('HDEL', run, 'awaitFailed') end
  return { 'resume' }
end
if (redis.call('HGET', run, 'cancelRequestedAt') or '') ~= '' then
  if paged then redis.call('UNLINK', k_awaits(tag, id)) end
  return { finalize(tag, id, 'canceled', 'errorJson', '', now, token) }
end
local wake_at = tonumber(ARGV[5])
if wake_at and wake_at <= now then return resume() end
local n, first_event = tonumber(ARGV[6]) or 0, 7 + (tonumber(ARGV[6]) or 0)
if paged then n, first_event = 0, 8 end
for i = first_event, #ARGV do
  -- an event list of another type (see `failed` in _lib.lua): refused naming the
  -- key, nothing written (a bare LLEN's WRONGTYPE named no key, and the worker
  -- retried the suspend for good without saying which key to remove)
  local list = k_ev(tag, id, ARGV[i])
  local len = redis.pcall('LLEN', list)
  if failed(len) then refuse(list, len) end
  if len > 0 then return resume() end
end
-- A child's run hash, run:<id>:kicked and workflow:<wf> below are read with
-- call_on: of another type, the call fails naming the key before any write (a
-- bare read's WRONGTYPE named no key).
local pending = {}
local own = {}  -- pending children of this run's own workflow (see the deadlock rule)
local wf = redis.call('HGET', run, 'workflow')
-- shards > 1: a child in another shard (its id names another shard) cannot be
-- read here; the caller read it unfinished, and its finish since then, if any,
-- was kicked into run:<id>:kicked (kick_parent.lua) or will wake the run later.
local here, remote = id_shard(id), {}
for i = 7, 6 + n do
  local status
  if id_shard(ARGV[i]) ~= here then
    -- a run re-sharded (redflow migrate --shards) keeps an id naming another
    -- shard: a child whose record is here is read here (a stub has no status)
    local child = k_run(tag, ARGV[i])
    status = call_on(child, 'HGET', child, 'status')
    if not status then
      local kicked = k_kicked(tag, id)
      status = call_on(kicked, 'HGET', kicked, ARGV[i]) or 'remote'
      if status == 'remote' then remote[ARGV[i]] = true end
    end
  else
    local child = k_run(tag, ARGV[i])
    local f = call_on(child, 'HMGET', child, 'status', 'workflow')
    status = f[1]
    if f[1] and not TERMINAL[f[1]] and f[2] == wf then own[#own + 1] = ARGV[i] end
  end
  if status == 'failed' or status == 'canceled' then return { 'resume' } end
  if status and not TERMINAL[status] then pending[#pending + 1] = ARGV[i] end
end
if n > 0 and #pending == 0 then return { 'resume' } end
local awaits = k_awaits(tag, id)
local own_paged = false
if paged then
  -- registered by this suspension's pages, none failed since, some unfinished
  -- (resumed, it replays: its step fails or ends, or it suspends again and
  -- the pages build the set again; the set is no one's meanwhile)
  local f = redis.call('HMGET', run, 'awaitsToken', 'awaitFailed')
  local left = redis.pcall('SCARD', awaits)
  if f[1] ~= token or f[2] or failed(left) or left == 0 then return resume() end
  if string.sub(ARGV[7], 1, 1) == '1' then
    local recheck = now + XSHARD_RECHECK_MS
    if not wake_at or recheck < wake_at then wake_at = recheck end
  end
  own_paged = string.sub(ARGV[7], 2, 2) == '1'
end
-- The deadlock rule (ChildWaits._check_deadlock in childwaits.py, same reads): awaited
-- children of the run's own workflow hold no slot of it, and every slot is held by
-- a suspended run (this one aside). The handler's check and this suspension are
-- not one step: two runs filling the last slots that check at once each see the
-- other still running, and both would suspend for good. Decided here with the
-- suspension, the later of them executes again instead, and its replayed check
-- then fails the wait step with WaitDeadlockError.
if #own > 0 or own_paged then
  local running = k_running(tag, wf)
  local card = redis.pcall('SCARD', running)  -- of another type: no rule
  if type(card) ~= 'number' then card = 0 end
  local wf_key = k_wf(tag, wf)
  local limit = tonumber(call_on(wf_key, 'HGET', wf_key, 'maxConcurrency'))
  if not limit or limit == 0 then limit = tonumber(redis.call('HGET', run, 'maxConcurrency')) end
  if not limit or limit < 1 then limit = 1 end
  if card >= limit then
    local stuck = true
    for _, child in ipairs(own) do
      if redis.call('SISMEMBER', running, child) == 1 then stuck = false break end
    end
    if stuck and card > DEADLOCK_SCAN_LIMIT then
      -- O(1): the other holders are all suspended when wf-suspended counts them
      -- all (of another type: no rule)
      local held = redis.pcall('SCARD', k_wf_suspended(tag, wf))
      local me = redis.call('SISMEMBER', running, id)
      if type(held) ~= 'number' or held < card - me then stuck = false end
    elseif stuck then
      for _, holder in ipairs(redis.call('SMEMBERS', running)) do
        if holder ~= id and redis.pcall('HGET', k_run(tag, holder), 'status') ~= 'suspended' then
          stuck = false
          break
        end
      end
    end
    if stuck and own_paged then
      -- (paged) an awaited child holds a slot: a member of both the slot set and
      -- the awaited set, looked for in the smaller, and only when every other
      -- holder is suspended (above, O(1) past DEADLOCK_SCAN_LIMIT): scanning
      -- every holder first, 200,000 slots held Redis 213 ms in this call
      local small, big = running, awaits
      local left = redis.pcall('SCARD', awaits)
      if type(left) == 'number' and left < card then small, big = awaits, running end
      for _, member in ipairs(redis.call('SMEMBERS', small)) do
        if redis.call('SISMEMBER', big, member) == 1 then stuck = false break end
      end
    end
    if stuck then return resume() end
  end
end
if not paged and n == 0 and not wake_at and #ARGV < 7 then return { 'resume' } end  -- waits for nothing
-- What wakes it is written first (see `failed` in _lib.lua): a child's waiters
-- set of another type is looked at again by a timer, like a child in another
-- shard; `timers` of another type fails the call before the run changes (its
-- worker waits and tries again; the run stays running and leased).
local recheck = nil
for _, child in ipairs(pending) do
  if remote[child] or failed(redis.pcall('SADD', k_waiters(tag, child), id)) then
    recheck = now + XSHARD_RECHECK_MS
  end
end
if recheck and (not wake_at or recheck < wake_at) then wake_at = recheck end
if wake_at then
  local r = redis.pcall('ZADD', k_timers(tag), int_str(wake_at), id)
  if failed(r) then refuse(k_timers(tag), r) end
end
-- waitEvents: the awaited event names alone, for send_event.lua (the wait names
-- every awaited child as well, and may be megabytes): "<token> <JSON list>", or
-- "<token> " for none. The token (this suspension's, as doneToken) tells
-- send_event the names are this suspension's: an older version's wake leaves
-- waitEvents and its suspend_run does not write it (a rolling deploy), and the
-- names of the suspension before woke the run on the wrong events.
local names = {}
for i = first_event, #ARGV do names[#names + 1] = ARGV[i] end
local wait_events = token .. ' '
if #names > 0 then wait_events = wait_events .. cjson.encode(names) end
redis.call('HSET', run, 'status', 'suspended', 'wait', ARGV[4], 'waitEvents', wait_events,
  'suspendedAt', now, 'updatedAt', now, 'doneToken', token)
move_status(tag, id, 'running', 'suspended', now)
if wf and redis.pcall('SISMEMBER', k_running(tag, wf), id) == 1 then  -- it keeps its slot
  redis.pcall('SADD', k_wf_suspended(tag, wf), id)
end
redis.call('ZREM', k_leases(tag), id)
if not paged then  -- (paged: the pages built it)
  redis.call('UNLINK', awaits)
  redis.call('HDEL', run, 'awaitFailed')  -- an earlier paged registration's
  for _, child in ipairs(pending) do
    redis.call('SADD', awaits, child)
  end
end
return { 'suspended' }
