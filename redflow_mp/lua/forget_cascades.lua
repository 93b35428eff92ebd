-- forget_cascades: remove from `cascades` the runs whose cancel cascade a walk
-- finished (cascade.py), each only if no cancel recorded a cascade of that run
-- since the walk read its generation: a run canceled, resumed and canceled
-- again while the first walk went on keeps the second cancel's entry, which
-- its own canceller, or the supervisor's duty if that one died, walks.
--
-- KEYS[1]  cascades
-- ARGV[1]  tag   ARGV[2 ..] pairs: run id, the run's `cascadeGen` as the walk
--          read it before it listed the run's children ('' when absent)
-- Reply: how many entries were removed
-- Invariants: `cascadeGen` of a run counts the cascades recorded for it
-- (finalize in _lib.lua, in the call that writes the entry); an entry whose
-- run's count moved since the walk's read is never removed here (a resume
-- removes it: resume_run.lua); the run's `cascadeAt` (cascade_at.lua) goes
-- with its entry. Bounded by the pairs passed.
local tag = ARGV[1]
local removed = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local gen = redis.pcall('HGET', k_run(tag, id), 'cascadeGen')
  if type(gen) ~= 'string' then gen = '' end  -- absent, or a run key of another type
  if gen == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], id)
    -- where a cut walk stopped (cascade_at.lua): its cascade is over
    if gen ~= '' then redis.pcall('HDEL', k_run(tag, id), 'cascadeAt') end
  end
end
return removed
