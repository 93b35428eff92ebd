-- reindex_runs: put the runs of runs:unindexed back into their status index
-- once that index is a sorted set again (or gone). A run that finished while
-- runs:status:<status> held another type of value (a neighbour's key, a typo)
-- could not be added to it (move_status in _lib.lua) and is listed in
-- runs:unindexed for retention; the listing by status reads the index only, so
-- without this the run stayed missing from it after the key was fixed.
--
-- KEYS[1]  runs:unindexed
-- ARGV[1]  tag   ARGV[2]  max entries   ARGV[3]  entries to pass over first (the
--          caller's count of those whose index is still of another type)
-- Reply: { runs put back, entries left (index still of another type), entries read }
-- Invariant: a run put back is scored by its finish time (its runs:unindexed
-- score), as move_status would have; one no longer finished, or gone, only
-- leaves runs:unindexed (it is not retention's any more). Cost: an HGET and a
-- ZADD per entry.
local tag = ARGV[1]
local entries = redis.pcall('ZRANGE', KEYS[1], tonumber(ARGV[3]) or 0,
  (tonumber(ARGV[3]) or 0) + tonumber(ARGV[2]) - 1, 'WITHSCORES')
if failed(entries) then return { 0, 0, 0 } end
local moved, left = 0, 0
for i = 1, #entries, 2 do
  local id, finished = entries[i], entries[i + 1]
  local status = redis.pcall('HGET', k_run(tag, id), 'status')
  if type(status) ~= 'string' or not TERMINAL[status] then
    redis.call('ZREM', KEYS[1], id)
  elseif failed(redis.pcall('ZADD', k_status(tag, status), finished, id)) then
    left = left + 1
  else
    redis.call('ZREM', KEYS[1], id)
    moved = moved + 1
  end
end
return { moved, left, #entries / 2 }
