-- send_event: record an event for a run and wake the run if it waits for it.
--
-- KEYS[1]  run:<id>
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  event name   ARGV[4]  payload (JSON)
-- ARGV[5]  max_events_per_run (events waiting unconsumed per run)
-- ARGV[6]  idempotency key ('' = none): an event sent with a key the run has seen
--          is not stored again (a resend after a lost reply is safe). The run
--          remembers the keys of its last ARGV[5] keyed events stored (the window:
--          run:<id>:event-keys, and their order in run:<id>:event-key-order); an
--          older key is forgotten, and an event resent with it is stored again.
--          The same bound as the events waiting: a run's keys no longer grow for
--          its whole life. The window also drops its oldest keys past
--          EVENT_KEY_BYTES of keys (the run's eventKeyBytes field): 10,000 keys
--          of 4,096 characters held 103 MB a run, outside max_event_bytes_per_run
--          and kept after the events were consumed. (Keys of a set written before
--          the order list existed, or by an older version, are not in the list and
--          are kept.)
-- ARGV[7]  max_event_bytes_per_run (bytes of the run's unconsumed payloads; ''
--          or absent: no budget)
-- Reply: { 0 } unknown or finished run: nothing stored
--        { 2 } the key was seen: stored by an earlier call, nothing stored now
--        { -1, pending } the run already has max_events_per_run unconsumed events:
--                        nothing stored
--        { -2, bytes }   the run's unconsumed payloads hold `bytes` and this one
--                        would take them past max_event_bytes_per_run: nothing stored
--        { 1, woken (1|0) } stored at the end of run:<id>:ev:<len:name>; the run
--                        was suspended waiting for that name and is now queued
-- Invariant: events of one name are consumed in the order sent (RPUSH here,
-- LPOP in consume_event); eventsPending counts the unconsumed ones, eventBytes
-- their payloads' bytes (a run that had events before it existed counts from 0).
local tag = ARGV[1]
local id = ARGV[2]
local name = ARGV[3]
local run = KEYS[1]
local key = ARGV[6] or ''
local sent = k_evkeys(tag, id)
local order = k_evkey_order(tag, id)
local remembered = 0
if key ~= '' then
  -- Read first, also as the type check: the SADD and RPUSH below, after the
  -- event's writes, cannot fail then (a set or list of another type refuses the
  -- call before any write).
  local seen = redis.pcall('SISMEMBER', sent, key)
  if failed(seen) then refuse(sent, seen) end
  if seen == 1 then return { 2 } end
  remembered = call_on(order, 'LLEN', order)
end
-- the run hash of another type: refused naming it, nothing stored
local f = call_on(run, 'HMGET', run, 'status', 'eventsPending', 'waitEvents', 'eventBytes',
  'doneToken', 'eventKeyBytes')
if not f[1] or TERMINAL[f[1]] then return { 0 } end
local pending = finite(f[2]) or 0
if pending >= tonumber(ARGV[5]) then return { -1, pending } end
local bytes = finite(f[4]) or 0
local budget = tonumber(ARGV[7] or '')
if budget and bytes + #ARGV[4] > budget then return { -2, bytes } end
-- Placed first (see `failed` in _lib.lua): the set that names the run's event
-- lists (retention reads it), then the list. Either of another type fails the
-- call with nothing stored or counted: a refused send used to store and count
-- the event (each resend once more) and leave a run waiting for it suspended.
local names = k_evnames(tag, id)
local r = redis.pcall('SADD', names, name)
if failed(r) then refuse(names, r) end
local list = k_ev(tag, id, name)
r = redis.pcall('RPUSH', list, ARGV[4])
if failed(r) then refuse(list, r) end  -- (a name in `names` with no list is harmless)
-- Written, not incremented: a field that is not a number is not a refusal.
redis.call('HSET', run, 'eventsPending', int_str(pending + 1), 'eventBytes',
  int_str(bytes + #ARGV[4]))
if key ~= '' then
  redis.call('SADD', sent, key)
  redis.call('RPUSH', order, key)
  -- the window: the oldest keys past ARGV[5] (or past EVENT_KEY_BYTES of keys)
  -- are forgotten, at most 1000 a call (a sender with a lower limit than the one
  -- before shrinks it over a few sends)
  local EVENT_KEY_BYTES = 4194304
  local kept = (finite(f[6]) or 0) + #key
  local over = math.min(remembered + 1 - tonumber(ARGV[5]), 1000)
  local popped = 0
  while popped < 1000 and (popped < over or kept > EVENT_KEY_BYTES) do
    local old = redis.call('LPOP', order)
    if not old then break end
    redis.call('SREM', sent, old)
    kept, popped = kept - #old, popped + 1
  end
  redis.call('HSET', run, 'eventKeyBytes', int_str(math.max(kept, 0)))
end
-- The names the run waits for: its waitEvents field (suspend_run.lua), not its
-- wait, which names every awaited child too (a run suspended on a fan-out of
-- 100,000 children and an event: 3 MB, decoded in 27 ms at every event sent to
-- it). Only when written by the suspension the run is in (the token before the
-- space is its doneToken): a run suspended by an older version (a rolling
-- deploy) has none, or one an older wake left from a suspension before; its wait
-- is read.
local woken = 0
local events = nil
if f[1] == 'suspended' then
  local stamp, names = nil, nil
  if f[3] then stamp, names = string.match(f[3], '^(%S+) (.*)$') end
  if stamp and stamp == f[5] then
    if names ~= '' then
      local ok, list = pcall(cjson.decode, names)
      if ok and type(list) == 'table' then events = list end
    end
  else
    local ok, wait = pcall(cjson.decode, redis.call('HGET', run, 'wait') or '')
    if ok and type(wait) == 'table' and type(wait.events) == 'table' then events = wait.events end
  end
end
if events then
  for _, e in ipairs(events) do
    if e == name then
      if exit_helpers().wake(tag, id, now_ms()) then woken = 1 end
      break
    end
  end
end
return { 1, woken }
