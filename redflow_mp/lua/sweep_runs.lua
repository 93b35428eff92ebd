-- sweep_runs: retention. Remove finished runs (hash, steps, attempts, every index
-- entry, their idempotency key while it names them, their wait keys: awaited and
-- waiting sets, children set, unconsumed events) that finished more than the
-- retention period ago, in bounded batches.
--
-- KEYS[1]  runs:created
-- ARGV[1]  tag   ARGV[2]  retention ms (> 0)   ARGV[3]  batch size
-- ARGV[4]  shard count (absent: 1)   ARGV[5]  this shard's index
-- ARGV[6..] (child id, parent id) pairs released for this call (shards > 1): the
--        parent, in another shard, was read there as finished, gone, or no longer
--        awaiting the child (maintenance.py, after a reply named the pair)
-- Reply: { runs removed, more (1|0), child, parent, ... }: more = 1 when a full
--        batch was read (runs removed, kept or dropped from runs:unindexed) or the
--        event-list or parents-set budget ran out first (call again); then the (child, parent)
--        pairs this call could not decide: a finished child kept for a parent in
--        another shard (a script touches one shard), to be asked there
-- Cost: at most `batch` runs read, EVENT_LIST_BUDGET of their event lists and
-- PARENT_BUDGET members of their parents sets per call, not the size of a run: a run's keys go by UNLINK, so a big one (a steps hash of
-- a run with a million steps) is freed off the main thread instead of blocking
-- Redis while DEL frees it. A run's unconsumed events are one list per event
-- name, and its events set keeps every name ever sent (up to max_events_per_run
-- unconsumed, 10,000, and any number consumed): a run with more names than the
-- budget left loses a slice of them per call and is removed by a later one (10
-- runs of 10,000 names each took 520 ms of Redis in one call).
-- Invariant: an idempotency key never outlives the run it names.
-- A child started by run_workflow(s) (in run:<parent>:children) whose parent is
-- not finished, or failed or canceled and not yet removed (a resume replays it:
-- see `awaits`), is kept: the parent reads every child's outcome when the last
-- one finishes (a fan-out waiting a week on one child used to find the others
-- removed and fail). So is one that another unfinished parent found by its
-- idempotency key and awaits (run:<id>:parents): only the parent that started
-- it used to count, and a second parent woken after it finished failed with
-- "child run ... no longer exists". Its status index entry is scored now, so it is looked at
-- again a retention period later and the range read goes on past it. A kept run
-- counts in the batch as a removed one does: a page of them ended the call with
-- more = 0, and the runs that finished after them waited the duty's interval
-- behind each further page (a fan-out of 10,000 kept children: 50 minutes).
-- A parent in another shard (shards > 1; its id's ~<k>) read as absent here, and
-- its finished children were removed while it waited. Such a child is kept and
-- the pair named in the reply; the caller asks the parent's shard and passes the
-- pairs it found decided back (ARGV[6..]): the next call removes those children
-- (read by id, not from the range: a kept one was scored now). So a child is
-- named at most once a retention period, and the pairs of a reply are bounded by
-- the runs read and PARENT_BUDGET (with the pairs passed in).
-- A run whose parents set is larger than the PARENT_BUDGET left is read in
-- slices (see `awaited`): it stays where it is (not scored now: its other
-- parents would wait a retention period a slice) and the reply says more = 1.
local tag = ARGV[1]
local now = now_ms()
local cutoff = now - tonumber(ARGV[2])
local batch = tonumber(ARGV[3])
local removed = 0
local read = 0  -- runs read from the indexes (removed, kept, or not finished)
local EVENT_LIST_BUDGET = 4000
local budget = EVENT_LIST_BUDGET
-- Members of the runs' parents sets read per call (see `awaited`): a child
-- shared by idempotency key with 100,000 finished parents held Redis 351 ms in
-- one call that read them all.
local PARENT_BUDGET = 2000
local parent_budget = PARENT_BUDGET
local short = false  -- a run was left undecided by PARENT_BUDGET (call again)
local more = false
-- An index of the wrong type (see `failed` in _lib.lua) is skipped: retention of
-- the runs the others name goes on (one broken key used to stop it for all).
-- The runs that finished while it was broken are in runs:unindexed (move_status),
-- swept from there at the same age (a resumed one has left it; one that is not
-- finished is only dropped from it).
local unindexed = k_unindexed(tag)
-- True when `parent` may still read run `id`: it awaits it (its children set)
-- and has not succeeded. A failed or canceled parent can be resumed, and its
-- replay reads the children of its children waits again (one recorded by
-- reference, past max_payload_bytes, has only their ids); the parent, finished
-- after them, outlived them, and its resume failed for good: "child run ... no
-- longer exists". Such children go a retention period after their parent.
local function awaits(parent, id)
  local status = redis.pcall('HGET', k_run(tag, parent), 'status')
  if type(status) ~= 'string' or status == 'succeeded' then return false end
  return redis.pcall('SISMEMBER', k_children(tag, parent), id) == 1
end
local count = tonumber(ARGV[4] or '1') or 1
local own = tonumber(ARGV[5] or '0') or 0
-- True when run `id` names a shard other than this one (suffix ~<k>, k % count:
-- shards.shard_index_of_run); an id without a decimal suffix is read here.
local function foreign(id)
  if count <= 1 then return false end
  local k = string.match(id, '~([^~]*)$')
  if k == nil then return own ~= 0 end
  if not string.match(k, '^%d+$') then return false end
  return (tonumber(k) % count) ~= own
end
local released = {}  -- 'child parent' -> true (ARGV[6..])
local freed, freed_parents = {}, {}  -- released children (in order), their released parents
for i = 6, #ARGV - 1, 2 do
  local child, parent = ARGV[i], ARGV[i + 1]
  released[child .. ' ' .. parent] = true
  if not freed_parents[child] then
    freed_parents[child] = {}
    freed[#freed + 1] = child
  end
  table.insert(freed_parents[child], parent)
end
local undecided = {}  -- reply tail: child, parent, ...
-- Whether finished run `id` is a run_workflow child of an unfinished parent:
-- 'kept' when one awaits it, the one that started it (parentRunId), or one that
-- found it by its idempotency key (run:<id>:parents; the finished ones are
-- dropped from it as they are read, so each is read once after it finished),
-- or a parent in another shard not released for this call (named in the
-- reply); 'partial' when the call's PARENT_BUDGET ran out before every member
-- of its parents set was read (none of those read awaits it: the run stays
-- where it is, undecided, and a later call reads on); else false. Members are
-- read SRANDMEMBER-style, at most the budget left: each one read is either
-- dropped (finished, gone, released) or keeps the run, so every call makes
-- progress; the run goes only after a call read every member left in the set
-- (a parent linked meanwhile is in it, and is read).
local function awaited(id, parent)
  local pending = {}
  if parent and parent ~= '' then
    if foreign(parent) then
      if not released[id .. ' ' .. parent] then pending[#pending + 1] = parent end
    elseif awaits(parent, id) then
      return 'kept'
    end
  end
  local others = k_parents(tag, id)
  local n = redis.pcall('SCARD', others)
  if failed(n) then n = 0 end  -- of another type: no parent known there
  local whole = n <= parent_budget
  local listed = {}
  if n > 0 and whole then
    listed = redis.call('SMEMBERS', others)
  elseif n > 0 and parent_budget > 0 then
    listed = redis.call('SRANDMEMBER', others, parent_budget)
  end
  parent_budget = parent_budget - #listed
  for _, other in ipairs(listed) do
    if foreign(other) and not released[id .. ' ' .. other] then
      pending[#pending + 1] = other
    elseif not foreign(other) and awaits(other, id) then
      return 'kept'
    else
      redis.call('SREM', others, other)
    end
  end
  for _, p in ipairs(pending) do
    undecided[#undecided + 1] = id
    undecided[#undecided + 1] = p
  end
  if #pending > 0 then return 'kept' end
  if not whole then return 'partial' end
  return false
end
-- Delete the event lists of run `id` within the budget; false when some are left.
local function drop_events(id)
  local evnames = k_evnames(tag, id)
  local n = redis.pcall('SCARD', evnames)
  if failed(n) or n == 0 then return true end  -- (of another type: no lists known)
  local names
  if n > budget then
    names = redis.call('SPOP', evnames, budget)
  else
    names = redis.call('SMEMBERS', evnames)
  end
  budget = budget - #names
  for _, name in ipairs(names) do
    redis.call('UNLINK', k_ev(tag, id, name))
  end
  return n <= #names
end
-- Remove run `id` (its hash fields workflow, idempotencyKey in `f`) listed in `index`.
local function remove(index, id, f)
  if f[1] then
    redis.pcall('ZREM', k_wf_runs(tag, f[1]), id)
    if f[2] and f[2] ~= '' then
      local idem = k_idem(tag, f[1], f[2])
      if redis.pcall('GET', idem) == id then redis.call('DEL', idem) end
    end
  end
  redis.pcall('ZREM', KEYS[1], id)
  redis.call('ZREM', index, id)
  redis.pcall('ZREM', k_leases(tag), id)
  redis.pcall('ZREM', k_timers(tag), id)
  redis.pcall('ZREM', tag .. ':on-failure-due', id)  -- its hook, if one is still due
  redis.call('UNLINK', k_run(tag, id), k_steps(tag, id), k_evnames(tag, id), k_awaits(tag, id),
    k_waiters(tag, id), k_children(tag, id), k_attempts(tag, id), k_kicked(tag, id),
    k_evkeys(tag, id), k_evkey_order(tag, id), k_parents(tag, id))
end
-- The released children first, by id: each was kept (scored now) by an earlier
-- call, so it is past its retention. One not finished any more (resumed) has
-- left its index; one the event-list budget stops is named again (asked anew).
for _, id in ipairs(freed) do
  local f = redis.pcall('HMGET', k_run(tag, id), 'workflow', 'idempotencyKey', 'parentRunId',
    'status')
  if failed(f) then f = {} end
  local index = nil
  if f[4] and TERMINAL[f[4]] then
    for _, candidate in ipairs({ k_status(tag, f[4]), unindexed }) do
      if type(redis.pcall('ZSCORE', candidate, id)) == 'string' then
        index = candidate
        break
      end
    end
  end
  if index then
    read = read + 1
    -- Its released parents leave its parents set first (a call reads a slice of
    -- a large one: a released member not in the slice was asked for nothing).
    local others = k_parents(tag, id)
    for _, p in ipairs(freed_parents[id]) do redis.pcall('SREM', others, p) end
    local verdict = awaited(id, f[3])
    if verdict == 'kept' then
      redis.call('ZADD', index, ms(now), id)  -- kept (see above)
    elseif verdict == 'partial' or more or budget <= 0 or not drop_events(id) then
      -- (PARENT_BUDGET: its other parents by a later call, named again with
      -- its released pairs as for the event-list budget)
      if verdict == 'partial' then short = true else more = true end
      for _, p in ipairs(freed_parents[id]) do
        undecided[#undecided + 1] = id
        undecided[#undecided + 1] = p
      end
    else
      remove(index, id, f)
      removed = removed + 1
    end
  end
end
local indexes = { k_status(tag, 'succeeded'), k_status(tag, 'failed'),
  k_status(tag, 'canceled'), unindexed }
for _, index in ipairs(indexes) do
  if read >= batch or more then break end
  local ids = redis.pcall('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, batch - read)
  if failed(ids) then ids = {} end
  for _, id in ipairs(ids) do
    read = read + 1
    local f = redis.pcall('HMGET', k_run(tag, id), 'workflow', 'idempotencyKey', 'parentRunId',
      'status')
    if failed(f) then f = {} end
    if index == unindexed and f[4] and not TERMINAL[f[4]] then
      redis.call('ZREM', index, id)  -- not finished (any more): not retention's
    else
      local verdict = awaited(id, f[3])
      if verdict == 'kept' then
        redis.call('ZADD', index, ms(now), id)  -- kept (see above)
      elseif verdict == 'partial' then
        short = true  -- its other parents next call (it stays where it is)
      elseif budget <= 0 or not drop_events(id) then
        more = true  -- its other event lists next call (it stays where it is)
        break
      else
        remove(index, id, f)
        removed = removed + 1
      end
    end
  end
end
if read >= batch or short then more = true end
local reply = { removed, more and 1 or 0 }
for _, x in ipairs(undecided) do reply[#reply + 1] = x end
return reply
