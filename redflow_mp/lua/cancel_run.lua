-- cancel_run: request cancellation. A queued, scheduled or suspended run (also
-- one parked behind max_concurrency) becomes canceled at once (a suspended one
-- loses its timer and awaited set, and its concurrency slot is freed); a running run gets
-- cancelRequestedAt and its worker stops it at the next step boundary (the
-- supervisor stops a handler that ignores it).
--
-- KEYS[1]  run:<id>
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  reason ('' = none)
-- ARGV[4]  (optional, '' = none) the parent whose cancel cascade sends this: the
--          run is canceled only if it is that parent's child (its parentRunId).
--          A run found by an idempotency key (run_workflow(..., idempotency_key=))
--          is in the run:<id>:children of every parent that awaits it; the cancel
--          of one of them canceled it, and failed every other parent awaiting it,
--          or a run a client started with that key.
-- Reply: { 0, '' } unknown run | { 1, status after the call }
--        | { 2, status } not ARGV[4]'s child: nothing changed
-- Invariant: O(log N) in the size of the queue (ZREM from the ready, scheduled
-- and wf-waiting sets; a stale due-queues score is fixed by the promoter).
-- The run's children started by run_workflow (run:<id>:children) are canceled by
-- the caller (the library walks them), not here: the walk is unbounded.
local tag = ARGV[1]
local id = ARGV[2]
local run = KEYS[1]
local f = redis.call('HMGET', run, 'status', 'queue', 'workflow', 'cancelRequestedAt')
local status = f[1]
if not status then return { 0, '' } end
if TERMINAL[status] then return { 1, status } end
local parent = ARGV[4] or ''
if parent ~= '' and redis.call('HGET', run, 'parentRunId') ~= parent then
  return { 2, status }
end
local now = now_ms()
if not f[4] or f[4] == '' then
  redis.call('HSET', run, 'cancelRequestedAt', now, 'updatedAt', now)
  if ARGV[3] ~= '' then redis.call('HSET', run, 'cancelReason', ARGV[3]) end
end
if status == 'queued' or status == 'scheduled' or status == 'suspended' then
  local q = f[2]
  -- (a set of another type holds no entry to remove: see `failed` in _lib.lua)
  if q then
    redis.pcall('ZREM', k_ready(tag, q), id)
    redis.pcall('ZREM', k_scheduled(tag, q), id)
  end
  if f[3] then redis.pcall('ZREM', k_waiting(tag, f[3]), id) end
  status = finalize(tag, id, 'canceled', 'errorJson', '', now, '')
end
return { 1, status }
