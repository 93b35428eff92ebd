-- finalize_run: end a run for its lease holder: succeeded, failed or canceled,
-- put back (requeue), or scheduled for another attempt (retry).
--
-- KEYS[1]  run:<id>
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  lease token
-- ARGV[4]  mode: succeeded | failed | canceled | retry | requeue | crash | defer
-- ARGV[5]  payload: outputJson | errorJson | cause (requeue, crash)
-- ARGV[6]  retry delay ms (retry, defer) | max crashes (crash)
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
local held, done = lease_check(tag, id, f, token, now)
if not held then
  if done then return { 1, done } end
  return { -1, '' }
end
local mode = ARGV[4]
local status
if mode == 'retry' then
  status = retry(tag, id, ARGV[5], tonumber(ARGV[6]) or 0, now, token)
elseif mode == 'defer' then
  status = retry(tag, id, '', tonumber(ARGV[6]) or 0, now, token, true)
elseif mode == 'requeue' then
  status = requeue(tag, id, ARGV[5], false, 0, now, token)
elseif mode == 'crash' then
  status = requeue(tag, id, ARGV[5], true, tonumber(ARGV[6]) or 3, now, token)
elseif mode == 'succeeded' then
  status = finalize(tag, id, mode, 'outputJson', ARGV[5], now, token, f)
else
  status = finalize(tag, id, mode, 'errorJson', ARGV[5], now, token, f)
end
return { 1, status }
