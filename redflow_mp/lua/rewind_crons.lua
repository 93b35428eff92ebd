-- rewind_crons: the leader brings back cron entries whose next fire time lies
-- further ahead than their schedule allows from now: written while the Redis
-- clock ran ahead (a host booted with a wrong clock, an NTP step, a failover to
-- a server whose clock is ahead) and left there when it went back. A `*/1` entry
-- fired at a clock a day ahead waited a day, silent, for its next fire.
--
-- KEYS[1]  lock:cron   KEYS[2]  cron:next
-- ARGV[1]  tag   ARGV[2]  leader token
-- ARGV[3 ..] pairs of (cron id, fire time ms): the first fire time of its
--          schedule after the server time the caller read
-- Reply: { cron id moved, ... } | -1 not the leader
-- Invariants: an entry only moves earlier, to a fire time still ahead of the
-- clock of this call (so one the caller computed from an older time, which
-- a fire since then moved past, is left alone: its schedule has no fire time
-- between that older time and the one given, and none was skipped), and past
-- the fire time of its latest run (cron:last; its idempotency key ends with
-- it): a fire time fired while the clock ran ahead is not fired again. Only the
-- lock holder writes, as fire_cron.lua. Cost: one ZSCORE and at most two HGETs
-- per pair; keys of another type are read as absent (pcall).
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return -1 end
local now = now_ms()
local tag = ARGV[1]
local last_key = tag .. ':cron:last'
-- The fire time of the latest run of entry `id` (0: none known).
local function last_fire(id)
  local prev = redis.pcall('HGET', last_key, id)
  if type(prev) ~= 'string' then return 0 end
  local key = redis.pcall('HGET', k_run(tag, prev), 'idempotencyKey')
  if type(key) ~= 'string' then return 0 end
  return tonumber(string.match(key, ':(%d+)$')) or 0
end
local moved = {}
for i = 3, #ARGV - 1, 2 do
  local id, at = ARGV[i], tonumber(ARGV[i + 1])
  local score = redis.pcall('ZSCORE', KEYS[2], id)
  if failed(score) then return moved end  -- of another type: nothing to move
  score = tonumber(score)
  if score and at and at > now and score > at and at > last_fire(id) then
    redis.call('ZADD', KEYS[2], int_str(at), id)
    moved[#moved + 1] = id
  end
end
return moved
