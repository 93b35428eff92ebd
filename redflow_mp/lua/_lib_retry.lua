-- _lib_retry.lua: the exits from `running` that put a run back (after _lib.lua, whose
-- names they use; luafiles.py joins the helper files in order): a retry and a put-back.

-- retry_helpers() makes `retry` and `requeue` on first use and returns them by name
-- (`retry_helpers().retry(...)`), once per call (the function library: once per load),
-- as exit_helpers() in _lib.lua: a worker's steady-state claim_run needs neither.
local RETRY_HELPERS = nil
local function retry_helpers()
  if RETRY_HELPERS then return RETRY_HELPERS end
  local record_attempt = exit_helpers().record_attempt
  -- running -> queued (delay 0, at the back of its priority band) or scheduled,
  -- attempt + 1.
  -- With `deferred` (a worker put back a run of a workflow it does not load, for a
  -- running supervisor that does): no attempt is spent and none is recorded, and
  -- the run's error stays. A scheduled run records its delay (`delayMs`): a retry
  -- scheduled while the Redis clock ran ahead is re-based on it once the clock
  -- went back (promote_runs.lua), not left to wait as long as the clock was ahead.
  local function retry(tag, id, error_json, delay_ms, now, done_token, deferred)
    local run = k_run(tag, id)
    local f = redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow', 'attempt',
      'priority')
    if f[2] and f[2] ~= '' then
      return finalize(tag, id, 'canceled', 'errorJson', '', now, done_token)
    end
    local q = f[3]
    local due = now + delay_ms
    local status = 'queued'
    -- Placed first (see `failed`). A scheduled set or due-queues of another type:
    -- the retry goes to the ready set at its due time's place (its backoff is not
    -- waited for; never stranded); a ready set of another type fails the call.
    if delay_ms > 0 then
      local sched = k_scheduled(tag, q)
      if not failed(redis.pcall('ZADD', sched, due, id)) then
        if mark_due(tag, q, due) then status = 'scheduled' else redis.call('ZREM', sched, id) end
      end
    end
    if status == 'queued' then
      local score = ready_score(f[6], due)
      local r = redis.pcall('ZADD', k_ready(tag, q), score, id)
      if failed(r) then refuse(k_ready(tag, q), r) end
      mark_ready(tag, q, score)
      ring(tag, q)
    end
    if deferred then
      redis.call('HSET', run, 'status', status, 'availableAt', due, 'updatedAt', now,
        'doneToken', done_token or '')
    else
      if f[1] == 'running' then record_attempt(tag, id, 'retried', error_json, '', now) end
      redis.call('HSET', run, 'status', status, 'attempt', (finite(f[5]) or 1) + 1,
        'availableAt', due, 'errorJson', error_json, 'updatedAt', now, 'doneToken', done_token or '')
    end
    if status == 'scheduled' then redis.call('HSET', run, 'delayMs', int_str(delay_ms)) end
    move_status(tag, id, f[1], status, now)
    leave_running(tag, id, f[4])
    return status
  end

  -- running -> queued near the front of its priority band (its createdAt): its
  -- worker is gone or stopping. With count_crash, the run's crash counter grows;
  -- at max_crashes it fails.
  local function requeue(tag, id, cause, count_crash, max_crashes, now, done_token)
    local run = k_run(tag, id)
    local f = redis.call('HMGET', run, 'status', 'cancelRequestedAt', 'queue', 'workflow',
      'crashCount', 'priority', 'createdAt')
    if f[1] ~= 'running' then return f[1] or '' end
    if f[2] and f[2] ~= '' then
      return finalize(tag, id, 'canceled', 'errorJson', '', now, done_token)
    end
    local crashes = (finite(f[5]) or 0) + 1
    if count_crash and crashes >= max_crashes then
      redis.call('HSET', run, 'crashCount', crashes, 'lastCrash', cause)
      local msg = 'run killed its worker process ' .. crashes .. ' times (last: ' .. cause ..
        '); failing it instead of retrying (max_run_crashes=' .. max_crashes .. ')'
      return finalize(tag, id, 'failed', 'errorJson',
        cjson.encode({ type = 'RunCrashedError', message = msg, retryable = false }), now,
        done_token)
    end
    -- Placed first (see `failed`): a ready set of another type fails the call
    -- with nothing written; the run stays running (the reaper tries again later).
    local score = ready_score(f[6], f[7])
    local r = redis.pcall('ZADD', k_ready(tag, f[3]), score, id)
    if failed(r) then refuse(k_ready(tag, f[3]), r) end
    mark_ready(tag, f[3], score)
    if count_crash then
      redis.call('HSET', run, 'crashCount', crashes, 'lastCrash', cause)
    elseif cause ~= '' then
      redis.call('HSET', run, 'lastCrash', cause)
    end
    record_attempt(tag, id, 'requeued', '', cause, now)
    if done_token and done_token ~= '' then
      redis.call('HSET', run, 'status', 'queued', 'updatedAt', now, 'doneToken', done_token)
    else
      redis.call('HSET', run, 'status', 'queued', 'updatedAt', now)
    end
    move_status(tag, id, 'running', 'queued', now)
    leave_running(tag, id, f[4])
    ring(tag, f[3])
    return 'queued'
  end
  RETRY_HELPERS = { retry = retry, requeue = requeue }
  return RETRY_HELPERS
end
