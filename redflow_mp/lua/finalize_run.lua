-- finalize_run: end a run for its lease holder: succeeded, failed or canceled,
-- put back (requeue), or scheduled for another attempt (retry).
--
-- KEYS[1]  run:<id>
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  lease token
-- ARGV[4]  mode: succeeded | failed | canceled | retry | requeue | crash | defer
-- ARGV[5]  payload: outputJson | errorJson | cause (requeue, crash)
-- ARGV[6]  retry delay ms (retry, defer) | max crashes (crash)
-- ARGV[7]  on_failure grace ms (absent or 0: none)   ARGV[8..] the workflows whose
--          on_failure the caller runs: a run of one of them that this call fails
--          for good is recorded in `on-failure-due` (scored now + grace), atomically
--          with the failure; the caller removes it once the hook returned
--          (hookdue.py), the reaper of a supervisor takes over one left past its
--          deadline (take_hooks.lua)
-- Reply: { 1, new status } | { -1, '' } when the lease is not ours
-- Invariants: fenced by the token; indexes, the lease entry and the workflow's
-- running set change together; a terminal status is published on
-- run-done:<id>; `crash` counts against max_run_crashes and fails the run at
-- the cap (poison pill); `defer` schedules the run again like `retry` without
-- spending an attempt (a worker that does not load its workflow). Resend-safe: the run stores the token of the last
-- finish applied (doneToken), so the same call sent again after a lost reply
-- gets { 1, the run's status now } and changes nothing (the caller then runs
-- on_failure for a `failed` run exactly once).
local tag = ARGV[1]
local id = ARGV[2]
local token = ARGV[3]
local now = now_ms()
-- One read of the run for the lease check and the finish (finish_fields).
local f = finish_fields(k_run(tag, id))
local mode = ARGV[4]
-- A terminal finish takes the lease entry with the check (lease_check: unlease).
local terminal = mode ~= 'retry' and mode ~= 'defer' and mode ~= 'requeue' and mode ~= 'crash'
local held, done, unleased = lease_check(tag, id, f, token, now, terminal)
if not held then
  if done then return { 1, done } end
  return { -1, '' }
end
local status
local retry, requeue = nil, nil  -- (_lib_retry.lua: made on first use)
if mode == 'retry' or mode == 'defer' or mode == 'requeue' or mode == 'crash' then
  retry, requeue = retry_helpers().retry, retry_helpers().requeue
end
if mode == 'retry' then
  status = retry(tag, id, ARGV[5], tonumber(ARGV[6]) or 0, now, token)
elseif mode == 'defer' then
  status = retry(tag, id, '', tonumber(ARGV[6]) or 0, now, token, true)
elseif mode == 'requeue' then
  status = requeue(tag, id, ARGV[5], false, 0, now, token)
elseif mode == 'crash' then
  status = requeue(tag, id, ARGV[5], true, tonumber(ARGV[6]) or 3, now, token)
elseif mode == 'succeeded' then
  status = finalize(tag, id, mode, 'outputJson', ARGV[5], now, token, f, unleased)
else
  status = finalize(tag, id, mode, 'errorJson', ARGV[5], now, token, f, unleased)
end
local grace = tonumber(ARGV[7]) or 0
if status == 'failed' and grace > 0 and f[4] then
  for i = 8, #ARGV do
    if ARGV[i] == f[4] then
      -- a pcall: an entry refused (a key of another type) must not fail the finish
      redis.pcall('ZADD', tag .. ':on-failure-due', now + grace, id)
      redis.call('HDEL', k_run(tag, id), 'hookTakes')  -- a resumed run's: a new count
      break
    end
  end
end
return { 1, status }
