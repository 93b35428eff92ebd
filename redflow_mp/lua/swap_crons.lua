-- swap_crons: a registry sync replaces cron entries (an edited schedule or
-- input: a new id; an explicit id whose schedule changed; the upgrade of ids
-- holding ':'), atomically against the leader's fires: each group is applied
-- only while every entry it replaces still has the next fire time the sync
-- read (cronswap.py computed the new entries' first fire times from those).
--
-- KEYS[1]  cron:next   KEYS[2]  cron:def
-- ARGV[1]  tag
-- ARGV[2 ..] groups (one workflow's entries each): n checks, n removals, n writes,
--          then the checks (cron id, its next fire time as read, '' = none), the
--          ids removed (cron:next, cron:def, cron:last, cron:skipped), the writes
--          (cron id, definition json, first fire time ms)
-- Reply: { index of a group not applied (an entry it replaces changed: fired,
--          removed or written since the read; the sync reads again), ... } (0-based)
-- Invariant: a fire time the replaced entry fired (or skipped: its next fire
-- time moved past it) after the sync's read is never a first fire time of the
-- new one: that group is not applied and computed again.
local tag = ARGV[1]
local last_key, skipped_key = tag .. ':cron:last', tag .. ':cron:skipped'
local refused = {}
local i, group = 2, 0
while i + 2 <= #ARGV do
  local checks, removals, writes = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local same = true
  for j = i, i + 2 * checks - 1, 2 do
    local score, want = redis.call('ZSCORE', KEYS[1], ARGV[j]), ARGV[j + 1]
    if want == '' then
      if score then same = false end
    elseif not score or (score ~= want and tonumber(score) ~= tonumber(want)) then
      same = false
    end
  end
  i = i + 2 * checks
  if same then
    for j = i, i + removals - 1 do
      redis.call('ZREM', KEYS[1], ARGV[j])
      redis.call('HDEL', KEYS[2], ARGV[j])
      -- pcall: of another type (a neighbour's key), they only keep a stale field
      redis.pcall('HDEL', last_key, ARGV[j])
      redis.pcall('HDEL', skipped_key, ARGV[j])
    end
    for j = i + removals, i + removals + 3 * writes - 1, 3 do
      redis.call('HSET', KEYS[2], ARGV[j], ARGV[j + 1])
      redis.call('ZADD', KEYS[1], ARGV[j + 2], ARGV[j])
    end
  else
    refused[#refused + 1] = group
  end
  i = i + removals + 3 * writes
  group = group + 1
end
return refused
