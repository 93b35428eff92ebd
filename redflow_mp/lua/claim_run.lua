-- claim_run: finish the caller's current run (optional) and claim the next one
-- (optional) in one round trip: the worker's steady state is one call per run.
--
-- KEYS[1]  q:<first queue>:ready (declared for routing; derived keys share its slot)
-- ARGV[1]  tag `{prefix}`
-- ARGV[2]  lease ms for the new claim
-- ARGV[3]  lease token for the new claim ('' = do not claim)
-- ARGV[4]  finish mode: '' | succeeded | failed | canceled | retry | requeue
-- ARGV[5]  finish run id         ARGV[6]  finish lease token
-- ARGV[7]  finish payload: outputJson (succeeded) | errorJson (failed, canceled, retry)
--          | cause text (requeue)
-- ARGV[8]  retry delay ms (retry)
-- ARGV[9]  claim this run id only ('' = take the next from the queues): the inline
--          path of step.run_workflow
-- ARGV[10] '1' when the caller was just woken by a bell: if runs remain after its
--          claim, ring again to wake the next idle worker (enqueue rings only when a
--          ready list goes from empty to non-empty)
-- ARGV[11] number of queues n; ARGV[12 .. 11+n] queue names in the order to scan
-- Reply: { finish result, claimed }
--   finish result: '' (nothing to finish) | 'lease-lost' | the run's new status
--   claimed: {} or { id, workflow, queue, inputJson, attempt, maxAttempts, createdAt,
--            parentRunId, timeoutMs, cronId, startedAt, { step, json, ... } }
-- Invariants: a finish is applied only if ARGV[6] still holds the lease (fencing);
-- a claimed run is running, leased and counted in wf-running:<wf>; a run over its
-- workflow's max_concurrency is parked in wf-waiting:<wf>, never dropped.
local tag = ARGV[1]
DROPPED = {}  -- per call (the helpers may live in a loaded function library)
local lease_ms = tonumber(ARGV[2])
local token = ARGV[3]
local mode = ARGV[4]
local now = now_ms()
local finished = ''

if mode ~= '' then
  local id = ARGV[5]
  if not check_lease(tag, id, ARGV[6]) then
    finished = 'lease-lost'
  elseif mode == 'retry' then
    finished = retry(tag, id, ARGV[7], tonumber(ARGV[8]) or 0, now)
  elseif mode == 'requeue' then
    finished = requeue(tag, id, ARGV[7], false, 0, now)
  elseif mode == 'succeeded' then
    finished = finalize(tag, id, mode, 'outputJson', ARGV[7], now)
  else
    finished = finalize(tag, id, mode, 'errorJson', ARGV[7], now)
  end
end

if token == '' then return { finished, {}, DROPPED } end

local nq = tonumber(ARGV[11])
local only = ARGV[9]
local woken = ARGV[10] == '1'
if only ~= '' then
  for i = 1, nq do
    local q = ARGV[11 + i]
    if redis.call('LREM', k_ready(tag, q), 1, only) == 1 then
      redis.call('LPUSH', k_processing(tag, q), only)
      local got = take(tag, only, q, token, lease_ms, now)
      if got then return { finished, got, DROPPED } end
      return { finished, {}, DROPPED }
    end
  end
  return { finished, {}, DROPPED }
end

-- Bounded scan: skipped entries (stale, canceled, parked) cost one iteration each.
local scanned = 0
while scanned < 32 do
  local progressed = false
  for i = 1, nq do
    local q = ARGV[11 + i]
    local id = redis.call('LMOVE', k_ready(tag, q), k_processing(tag, q), 'RIGHT', 'LEFT')
    if id then
      progressed = true
      scanned = scanned + 1
      local got = take(tag, id, q, token, lease_ms, now)
      if got then
        if woken and redis.call('LLEN', k_ready(tag, q)) > 0 then ring(tag, q) end
        return { finished, got, DROPPED }
      end
      break
    end
  end
  if not progressed then break end
end
return { finished, {}, DROPPED }
