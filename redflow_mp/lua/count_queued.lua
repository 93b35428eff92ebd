-- count_queued: how many of one slice of runs:status:queued each workflow holds,
-- for the workflows view (dashboard, `redflow workflows`), so that a refresh sends
-- one command per slice instead of one HGET per queued run (10,000 a refresh at
-- the counting limit, every 5 s per dashboard viewer). Read-only.
-- flags: no-writes
--
-- KEYS: none (each key is derived from the hash-tagged prefix, as reap_runs does)
-- ARGV[1]  tag   ARGV[2]  first rank   ARGV[3]  last rank (of runs:status:queued)
-- Reply: { workflow_1, count_1, workflow_2, count_2, ... }: the runs of the slice
--   whose hash names a workflow (a run key of another type is left out).
-- Cost: one HGET per run of the slice; the caller bounds the slice.
local tag = ARGV[1]
local ids = redis.call('ZRANGE', k_status(tag, 'queued'), tonumber(ARGV[2]), tonumber(ARGV[3]))
local counts, order = {}, {}
for _, id in ipairs(ids) do
  local wf = redis.pcall('HGET', k_run(tag, id), 'workflow')
  if type(wf) == 'string' then
    if counts[wf] == nil then
      counts[wf] = 0
      order[#order + 1] = wf
    end
    counts[wf] = counts[wf] + 1
  end
end
local out = {}
for _, wf in ipairs(order) do
  out[#out + 1] = wf
  out[#out + 1] = counts[wf]
end
return out
