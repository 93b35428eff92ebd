-- rewind_crons: the leader brings back cron entries whose next fire time lies
-- further ahead than their schedule allows from now: written while the Redis
-- clock ran ahead (a host booted with a wrong clock, an NTP step, a failover to
-- a server whose clock is ahead) and left there when it went back. A `*/1` entry
-- fired at a clock a day ahead waited a day, silent, for its next fire.
--
-- KEYS[1]  lock:cron   KEYS[2]  cron:next
-- ARGV[1]  tag   ARGV[2]  leader token
-- ARGV[3 ..] groups of four: cron id, fire time ms (the first fire time of its
--          schedule after the server time the caller read), its workflow, the
--          idempotency key of its runs up to the fire time ("cron:<id>:"; '' with
--          the workflow '': only cron:last is looked at)
-- Reply: { groups judged, cron id moved, ... } | -1 not the leader: the groups
--        from the first on that this call judged (at least one); the caller
--        sends the rest again (upkeep_scripts.rewind_crons)
-- Invariants: an entry only moves earlier, and past the fire time of its latest
-- run (cron:last; its idempotency key ends with it), or before the first fire
-- time after now of the runs the entry fired while the clock ran ahead (its runs
-- in workflow-runs:<wf> created after now, the oldest AHEAD_READS of them): a
-- fire time fired while the clock ran ahead is not fired again, and the fire
-- times from now on, none of which fired (the fires at a clock a day ahead were
-- a day later), are. (With only cron:last looked at, an entry that had fired at
-- the clock that was ahead, the case this is for, never moved: its latest fire
-- time lies after every fire time from now on.) A fire time that passed between
-- the caller's read of the clock and this call (an every-second cron, a loaded
-- leader) is moved too when it did not fire: the tick fires it at once (left
-- where it was, the entry stayed silent until the next leader change or jump);
-- one that fired meanwhile is its latest run's and stays. A fire time skipped
-- (cron:skipped: the entry's latest skipped fire time, written by fire_cron.lua)
-- is not moved back to either: the skip policy passed it, and moved back it was
-- fired once, late; nor is one before it when that skip was not at a clock that
-- was ahead (a fire time is only skipped once due: one after now was skipped at
-- a clock ahead, and says nothing of the earlier fire times from now on, whose
-- skips, if any, left no record: those are moved, as the fires' rule has it, so
-- an entry is never silent for as long as the clock was ahead). Only the lock holder writes, as
-- fire_cron.lua. Cost: one ZSCORE and at most three HGETs per entry, and for an
-- entry whose latest run fired after the time it would move to, a ZRANGEBYSCORE
-- of the runs of its workflow created after now and an HGET for each of at most
-- AHEAD_READS of them (none found: it stays); keys of another type are read as
-- absent (pcall). A call reads at most AHEAD_BUDGET runs that way, then stops
-- before the next entry that needs them: a page of 200 entries whose workflow
-- had 200 runs created ahead each (a busy workflow while the clock ran ahead)
-- read 40,000 runs in one call, 62 ms of Redis.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return -1 end
local now = now_ms()
local tag = ARGV[1]
local last_key = tag .. ':cron:last'
local skipped_key = tag .. ':cron:skipped'
-- Whether fire time `at` of entry `id` was skipped, or lies before a skip made
-- at a clock not ahead of now.
local function skipped(id, at)
  local s = redis.pcall('HGET', skipped_key, id)
  s = type(s) == 'string' and tonumber(s) or nil
  if not s then return false end
  return at == s or (at < s and s <= now)
end
-- The fire time of the latest run of entry `id` (0: none known).
local function last_fire(id)
  local prev = redis.pcall('HGET', last_key, id)
  if type(prev) ~= 'string' then return 0 end
  local key = redis.pcall('HGET', k_run(tag, prev), 'idempotencyKey')
  if type(key) ~= 'string' then return 0 end
  return tonumber(string.match(key, ':(%d+)$')) or 0
end
-- Whether fire time `at` of entry `id` was (or may have been) fired already.
local AHEAD_READS = 200
local AHEAD_BUDGET = 2000
local reads = 0
-- nil: not judged (the call's AHEAD_BUDGET is spent; the first entry always is).
local function fired(id, at, wf, prefix)
  local last = last_fire(id)
  if at > last then return false end
  if at == last or wf == '' or prefix == '' then return true end
  if reads > 0 and reads + AHEAD_READS > AHEAD_BUDGET then return nil end
  -- the runs of this entry created at a clock ahead of now: the fires while it
  -- was ahead covered the fire times from the first of theirs after now on. The
  -- oldest of them is often the fire time the entry was due at when the clock
  -- jumped (at or before now: not one of those), which kept the entry where the
  -- clock ahead put it, silent for as long as it had been ahead.
  local runs = redis.pcall('ZRANGEBYSCORE', k_wf_runs(tag, wf), '(' .. int_str(now), '+inf',
    'LIMIT', 0, AHEAD_READS)
  if failed(runs) then return true end
  local seen = false
  for _, run_id in ipairs(runs) do
    reads = reads + 1
    local key = redis.pcall('HGET', k_run(tag, run_id), 'idempotencyKey')
    if type(key) == 'string' and string.sub(key, 1, #prefix) == prefix then
      local f = tonumber(string.match(string.sub(key, #prefix + 1), '^(%d+)$'))
      if f then
        if f == at or (f > now and f <= at) then return true end
        seen = true
      end
    end
  end
  return not seen  -- no such run found: kept, as a fire time that may have fired
end
local moved = { 0 }
for i = 3, #ARGV - 3, 4 do
  local id, at = ARGV[i], tonumber(ARGV[i + 1])
  local score = redis.pcall('ZSCORE', KEYS[2], id)
  if failed(score) then  -- of another type: nothing to move
    moved[1] = (#ARGV - 2) / 4
    return moved
  end
  score = tonumber(score)
  if score and at and score > at and not skipped(id, at) then
    local done = fired(id, at, ARGV[i + 2], ARGV[i + 3])
    if done == nil then return moved end  -- the rest: the next call
    if not done then
      redis.call('ZADD', KEYS[2], int_str(at), id)
      moved[#moved + 1] = id
    end
  end
  moved[1] = moved[1] + 1
end
return moved
