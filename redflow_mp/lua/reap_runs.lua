-- reap_runs: put back runs whose lease expired (their worker, or its whole
-- supervisor, is gone or cut off), and release parked runs when their
-- workflow has free slots (a raised max_concurrency, or any missed wake-up).
--
-- KEYS[1]  leases (ZSET runId -> lease expiry ms)
-- ARGV[1]  tag   ARGV[2]  batch size
-- Optional stall guard (a supervisor's reaper passes all four, '' = none):
-- ARGV[3]  server time of this reaper's previous call that reached this server
-- ARGV[4]  hold: no lease is reaped before this server time (0 = none)
-- ARGV[5]  gap ms: a longer time since the previous call means this reaper
--          could not reach the server (a Redis stall, restart or cut), so no
--          holder could renew either: every lease may have expired for that
--          reason alone
-- ARGV[6]  hold ms: after such a gap, reap nothing for this long (a lease: the
--          holders that live renew within a third of it, lease_held in _lib.lua)
--          This reaper's lease: see the clock guard below.
-- Reply: { released parked count, expired entries read, server time now,
--          hold (server ms, 0 = none), { freed slot 'wf id', ... }, requeued id, ... }
--   (entries read == batch means more may have expired, released == batch
--   that more parked runs may have free slots: call again)
-- Invariants: a run in `leases` whose expiry is not past is never touched; the
-- lease is the only proof of life (the supervisor extends it for children
-- stuck in C code). A holder whose lease expired keeps its run until this
-- script requeues it (removing it from `leases`).
-- Cost: one range read of the expired leases plus the work they need, and at
-- most `batch` parked workflows, however many runs are in flight or queues and
-- parked workflows exist.
local tag = ARGV[1]
local batch = tonumber(ARGV[2])
local now = now_ms()
local since = tonumber(ARGV[3] or '')
local hold = tonumber(ARGV[4] or '') or 0
local gap = tonumber(ARGV[5] or '')
if since and gap and now - since > gap then
  hold = math.max(hold, now + (tonumber(ARGV[6] or '') or 0))
end
-- Clock guard: a lease renewed while the Redis clock ran ahead (set back since
-- by NTP, or a failover to a server whose clock is behind) expires as much
-- later as the clock was ahead, and a dead holder's run waited that long (a
-- day ahead: a day) to be put back. A live holder renews from the clock now (at
-- most its lease ahead), so an entry more than CLOCK_SLACK_MS further ahead than
-- its run's lease (`leaseMs`, written by the claim) is moved to a lease from
-- now: a dead holder's run is put back at most a minute and two leases after
-- the clock went back. The slack leaves alone small differences between
-- servers and the minute this script gives a run whose requeue failed (below).
-- Read: the entries more than the slack past this reaper's own lease (ARGV[6]):
-- none while no clock went back and no supervisor uses a longer lease than it.
local CLOCK_SLACK_MS = 60000
local own = tonumber(ARGV[6] or '')
if own then
  local far = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf',
    '(' .. int_str(now + own + CLOCK_SLACK_MS), 'WITHSCORES', 'LIMIT', 0, batch)
  for i = 1, #far, 2 do
    local id = far[i]
    local lease_ms = redis.pcall('HGET', k_run(tag, id), 'leaseMs')
    lease_ms = type(lease_ms) == 'string' and tonumber(lease_ms) or nil
    if lease_ms and lease_ms > 0 and tonumber(far[i + 1]) > now + lease_ms + CLOCK_SLACK_MS then
      redis.call('ZADD', KEYS[1], 'XX', int_str(now + lease_ms), id)
    end
  end
end
local expired = {}
if now >= hold then
  hold = 0
  expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. int_str(now), 'LIMIT', 0, batch)
end
local ghosts = {}
local out = { 0, #expired, now, hold, ghosts }
-- (made on first use: _lib_retry.lua, _lib.lua; an idle call, the usual one, makes none)
local requeue = #expired > 0 and retry_helpers().requeue or nil
for _, id in ipairs(expired) do
  local status = redis.pcall('HGET', k_run(tag, id), 'status')
  if status == 'running' then
    -- A key the requeue needs of another type (its ready set): the run stays
    -- running, looked at again a minute later; the other expired leases go on.
    if pcall(requeue, tag, id, 'lease expired (worker lost or cut off)', false, 0, now, '') then
      out[#out + 1] = id
    else
      redis.call('ZADD', KEYS[1], int_str(now + 60000), id)
    end
  else
    redis.call('ZREM', KEYS[1], id)  -- a stale entry (run finished or removed)
  end
end
local released = 0
-- A parked workflow at its limit has a few of its slot holders looked at (at
-- most SLOT_CHECKS a call, drawn at random): a slot whose run is gone, of
-- another type or finished (evicted under an evicting maxmemory-policy, deleted,
-- or another program wrote into the prefix) is freed (named in the reply),
-- and a running one without its `leases` entry (removed behind our back: no
-- holder can renew or finish it any more, lease_held) is put back as if its
-- lease expired. Such a slot was otherwise held for good, and with the default
-- max_concurrency of 1 every later run of the workflow parked behind it.
local SLOT_CHECKS, checked = 32, 0
local function free_stale_slots(wf, checked)
  local freed = 0
  local some = redis.pcall('SRANDMEMBER', k_running(tag, wf), 4)
  if failed(some) then return 0, SLOT_CHECKS end
  for _, id in ipairs(some) do
    checked = checked + 1
    local st = redis.pcall('HGET', k_run(tag, id), 'status')
    if failed(st) or not st or TERMINAL[st] then
      redis.call('SREM', k_running(tag, wf), id)
      redis.pcall('SREM', k_wf_suspended(tag, wf), id)  -- (a lost suspended run)
      ghosts[#ghosts + 1] = wf .. ' ' .. id  -- logged by the caller (maintenance.py)
      freed = freed + 1
    elseif st == 'running' and not redis.call('ZSCORE', KEYS[1], id) then
      if pcall(retry_helpers().requeue, tag, id, 'lease lost (its leases entry was removed)',
        false, 0, now, '')
      then
        out[#out + 1] = id
        freed = freed + 1
      end
    end
  end
  return freed, checked
end
-- Up to `batch` parked workflows, drawn at random (every one while there are
-- no more: the usual case), and at most `batch` runs released in all. Reading
-- every parked workflow at every call cost two commands each (10,000 parked
-- workflows: ~10 ms a call, up to 100 calls a tick), and releasing `batch` per
-- workflow let 1,000 workflows given free slots at once move 200,000 runs in
-- one call. The random draw keeps one workflow with a big backlog from taking
-- every call's budget for good.
local parked = redis.pcall('SRANDMEMBER', tag .. ':parked', batch)
if failed(parked) then parked = {} end  -- of another type: named by the key check
for _, wf in ipairs(parked) do
  if released >= batch then break end
  local running = redis.pcall('SCARD', k_running(tag, wf))
  local limit = redis.pcall('HGET', k_wf(tag, wf), 'maxConcurrency')
  local free = 0
  if not failed(running) and not failed(limit) then
    limit = tonumber(limit)
    if not limit and running > 0 then
      -- No synced metadata: the limit the claim goes by is the one stored on the
      -- runs (wf_limit), here on one that holds a slot (a parked run is never
      -- read while it waits). Taken as 1, a slot freed without a release (the
      -- released run canceled before its claim) stayed empty as long as runs
      -- waited (one slot fewer per such cancel). No run holds a slot: 1 is free.
      local one = redis.pcall('SRANDMEMBER', k_running(tag, wf))
      if type(one) == 'string' then
        limit = tonumber(redis.pcall('HGET', k_run(tag, one), 'maxConcurrency'))
      end
    end
    free = math.max(limit or 1, 1) - running  -- as wf_limit
    if free <= 0 and checked < SLOT_CHECKS then
      local n
      n, checked = free_stale_slots(wf, checked)
      free = free + n
    end
  end
  if free > 0 then
    local n = exit_helpers().release_parked(tag, wf, math.min(free, batch - released))
    released = released + n
    -- (a waiting set of another type: release_parked skipped it, and so does
    -- this; a failing ZCARD here failed every reap call after its requeues)
    if n == 0 and redis.pcall('ZCARD', k_waiting(tag, wf)) == 0 then
      redis.pcall('SREM', tag .. ':parked', wf)
    end
  end
end
out[1] = released
return out
