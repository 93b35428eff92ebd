-- cascade_at: record where a cancel cascade cut by its bound stopped in a run's
-- children (cascade.py): the next walk of the run's `cascades` entry goes on
-- after it instead of sending every cancel again from the first child.
--
-- KEYS[1]  run:<id>
-- ARGV[1]  the run's `cascadeGen` as the walk read it ('' when absent)
-- ARGV[2]  where the walk stopped: '!<SSCAN cursor>:<set size when the cascade
--          began>:<fingerprint of that page>:<last child of it sent its
--          cancel>' (cascade.py)
-- Reply: 1 recorded | 0 not (the run is gone, of another type, or a cancel
-- recorded another cascade of it since the read: that one starts afresh)
-- Invariants: writes `cascadeAt` = '<gen>:<child>' only on an existing run hash
-- of that generation (never a run key of one field); forget_cascades.lua drops
-- it with the entry. O(1).
local gen = redis.pcall('HGET', KEYS[1], 'cascadeGen')
if type(gen) ~= 'string' then
  if type(gen) == 'table' and gen.err then return 0 end  -- a key of another type
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  gen = ''
end
if gen ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'cascadeAt', ARGV[1] .. ':' .. ARGV[2])
return 1
