-- await_children: one page of a paged suspend (a wait on more children than
-- SUSPEND_PAGE, wait_scripts.py). The lease holder registers the wake-ups of a
-- page of its awaited children while its run is still running: the run in each
-- unfinished child's waiters set, the child in run:<id>:awaits. The final
-- suspend_run (ARGV[6] = 'paged') then decides on run:<id>:awaits alone, O(1) in
-- the number of children: a suspend on 200,000 children read and wrote every
-- one of them in one script (1.26 s of Redis CPU, every other client blocked).
--
-- KEYS[1]  run:<id>
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  lease token
-- ARGV[4]  '1' for the first page (a fresh registration: run:<id>:awaits and the
--          run's awaitFailed emptied, awaitsToken = the token), else '0'
-- ARGV[5]  lease ms ('' = none): the lease runs at least that long from now
--          (the handler ended and its heartbeat with it: a registration of
--          many pages on a loaded Redis outlasted a 5 s lease, the run was put
--          back, and its next execution registered again, for good)
-- ARGV[6 ..] child run ids
-- Reply: { 'ok', pending, own, recheck }  pending: unfinished children of the page
--          (now in run:<id>:awaits); own: of them, runs of the run's own workflow
--          (the deadlock rule); recheck: 1 when one of them can only be looked at
--          again by a timer (in another shard, or its waiters set of another type)
--        { 'resume' }  a child of the page failed or was canceled: the wait step
--          fails on replay, nothing to suspend (the set the pages built is
--          dropped)
--        { 'lease-lost' } | { status }  as suspend_run (a resend after its reply
--          was lost finds the final suspend applied)
-- Invariant: no lost wake-up. A child's finish is a script: wholly before this
-- page (its status is read here, it is not registered) or wholly after (it finds
-- the run in its waiters set and removes itself from run:<id>:awaits; one that
-- failed or was canceled also marks the run `awaitFailed`, notify_parent in
-- _lib.lua), so the final check sees it either way. A finish in another shard is
-- kicked (kick_parent.lua): recorded in run:<id>:kicked, read here, and removed
-- from run:<id>:awaits when it comes later. Resend-safe: a page applied twice
-- adds the same members; a first page applied twice starts over the same way.
-- A registration abandoned (lease lost, canceled between pages) leaves entries
-- that no wake-up reads: a child's finish removes itself from the run's awaits
-- set, and wakes the run only when it is suspended and that set (rebuilt by each
-- suspension) is then empty; the next registration (page 1) or suspend_run
-- empties it first, and retention removes it with the run.
local tag = ARGV[1]
local id = ARGV[2]
local token = ARGV[3]
if not lease_held(tag, id, token, now_ms()) then
  return { already_done(tag, id, token) or 'lease-lost' }
end
local run = KEYS[1]
local lease_ms = tonumber(ARGV[5])
if lease_ms then  -- only ever later (GT): a lease the supervisor extended stays
  redis.call('ZADD', k_leases(tag), 'XX', 'GT', int_str(now_ms() + lease_ms), id)
end
local awaits = k_awaits(tag, id)
if ARGV[4] == '1' then
  redis.call('UNLINK', awaits)
  redis.call('HDEL', run, 'awaitFailed')
  redis.call('HSET', run, 'awaitsToken', token)
end
local wf = redis.call('HGET', run, 'workflow')
local here = id_shard(id)
local pending, own, recheck = 0, 0, 0
for i = 6, #ARGV do
  local cid = ARGV[i]
  local child = k_run(tag, cid)
  local status, remote = nil, false
  if id_shard(cid) ~= here then
    -- as suspend_run: a re-sharded child whose record is here is read here
    status = call_on(child, 'HGET', child, 'status')
    if not status then
      local kicked = k_kicked(tag, id)
      status = call_on(kicked, 'HGET', kicked, cid)
      if not status then status, remote = 'remote', true end
    end
  else
    local f = call_on(child, 'HMGET', child, 'status', 'workflow')
    status = f[1]
    if f[1] and not TERMINAL[f[1]] and f[2] == wf then own = own + 1 end
  end
  if status == 'failed' or status == 'canceled' then
    redis.call('UNLINK', awaits)  -- (the registration ends here: no one's)
    redis.call('HDEL', KEYS[1], 'awaitFailed')
    return { 'resume' }
  end
  if status and not TERMINAL[status] then
    if remote or failed(redis.pcall('SADD', k_waiters(tag, cid), id)) then recheck = 1 end
    local r = redis.pcall('SADD', awaits, cid)
    if failed(r) then refuse(awaits, r) end
    pending = pending + 1
  end
end
return { 'ok', pending, own, recheck }
