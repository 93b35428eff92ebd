-- relist_runs: put runs back into the index keys a lost key (evicted under an
-- evicting maxmemory-policy, deleted by hand or by another program) removed
-- them from. Every state transition writes a run's hash and its indexes in one
-- script, so a run whose hash says it is in a key but which that key does not
-- hold was taken out by nobody but Redis or a hand: a queued run in neither its
-- ready set nor its workflow's waiting set was claimed by nobody for good, a
-- scheduled run out of its scheduled set (or its queue out of due-queues) was
-- promoted by nobody, a finished run out of its status index was listed and
-- removed by retention never. One call reads a page of one source index, from
-- the cursor kept in KEYS[1], and repairs each run it names:
--   * every run: its status index (runs:status:<status>, scored by its finish
--     time when finished, else its updatedAt), workflow-runs:<wf> and, read
--     from another source than runs:created, runs:created (scored createdAt);
--   * queued: back into its ready set (ready_score of its priority and
--     availableAt, so priorities and order hold; ready-queues and the bell as
--     every placing script does), or parked behind its workflow's parked runs
--     when the workflow is at its max_concurrency with runs parked
--     (parks_at_once, as an enqueue does); one already parked keeps `parked`
--     naming its workflow. A run with a `leases` entry is never placed (only
--     a running run has one);
--   * scheduled: back into its scheduled set at its availableAt, and its queue
--     into due-queues no later than that (the promoter reads only due-queues);
--     a queue a run is put back on is named in `queues` again;
--   * running, suspended: back into wf-running:<wf> (its concurrency slot:
--     without it, claims started more runs than max_concurrency), a suspended
--     one also into wf-suspended:<wf> (the deadlock rule's count); a running
--     run's `leases` entry and a suspended run's timer are rearm_leases.lua's
--     and recheck_waits.lua's.
-- Nothing else is changed: a run's status is only read (a finished or canceled
-- run is never placed), a run without a hash is left alone (its index entries
-- are stale, not lost), a key of another type is skipped (the key check names
-- it). Idempotent: a run already where its status says is only read.
--
-- Sources, one after the other (a pass): runs:created, then the status indexes
-- of the unfinished statuses (queued, scheduled, running, suspended), so that
-- a lost runs:created hides no unfinished run listed there.
-- Paging: the cursor is the (score, member) last read; the next page starts
-- after it (ZRANK, O(log N)) or, when it left the index or moved to another
-- score, at its score (ZCOUNT),
-- so a run that stays in an index for a whole pass is read in that pass,
-- whatever enters or leaves it meanwhile.
--
-- KEYS[1]  relist (HASH: src, score, id: the cursor)
-- ARGV[1]  tag   ARGV[2]  page size
-- Reply: { pass done (1 when this page ended the last source), entries read,
--          { run id, key it was put back into, ... } }
-- Cost: per entry read one HMGET (two for an unfinished run), per index key
-- the page's runs are in one ZMSCORE, per unfinished run two to four
-- ZSCORE/SISMEMBER; a write only for a run put back (measured:
-- docs/operations.md, "Redis evicts keys").
local tag = ARGV[1]
local page = tonumber(ARGV[2])
local SOURCES = { tag .. ':runs:created', k_status(tag, 'queued'), k_status(tag, 'scheduled'),
  k_status(tag, 'running'), k_status(tag, 'suspended') }
local cursor = redis.pcall('HMGET', KEYS[1], 'src', 'score', 'id')
if failed(cursor) then cursor = {} end  -- of another type: from the start, not kept
local src = tonumber(cursor[1]) or 1
if src < 1 or src > #SOURCES then src = 1 end
local source = SOURCES[src]
local start = 0
if cursor[3] then
  -- After the cursor's member if it is still there at the cursor's score (not
  -- moved on to a later score: that would skip the runs in between), else at
  -- the cursor's score.
  local at = redis.pcall('ZSCORE', source, cursor[3])
  local rank = nil
  if type(at) == 'string' and tonumber(at) == tonumber(cursor[2]) then
    rank = redis.pcall('ZRANK', source, cursor[3])
  end
  if type(rank) == 'number' then
    start = rank + 1
  elseif tonumber(cursor[2]) then
    local before = redis.pcall('ZCOUNT', source, '-inf', '(' .. cursor[2])
    if type(before) == 'number' then start = before end
  end
end
local entries = redis.pcall('ZRANGE', source, start, start + page - 1, 'WITHSCORES')
if failed(entries) then entries = {} end  -- of another type: the key check names it
local out = {}
local function put(id, key) out[#out + 1] = id out[#out + 1] = key end
-- `key` lacks `id` (a sorted set of the right type without it).
local function lacks(key, id) return redis.pcall('ZSCORE', key, id) == false end

-- Index entries (status index, runs:created, workflow-runs) are checked a key
-- at a time, one ZMSCORE for the page's runs in it: the bulk of a large store,
-- finished runs, costs one HMGET each and a few commands per page.
local groups, order = {}, {}
local function group(key, id, score, terminal)
  local g = groups[key]
  if not g then
    g = { ids = {}, scores = {}, terminal = terminal }
    groups[key] = g
    order[#order + 1] = key
  end
  g.ids[#g.ids + 1] = id
  g.scores[#g.scores + 1] = score
end
local function reindex()
  for _, key in ipairs(order) do
    local g = groups[key]
    local got = redis.pcall('ZMSCORE', key, unpack(g.ids))
    if not failed(got) then  -- (of another type: the key check names it)
      for j, id in ipairs(g.ids) do
        if not got[j] and not failed(redis.pcall('ZADD', key, g.scores[j], id)) then
          put(id, key)
          if g.terminal then redis.pcall('ZREM', k_unindexed(tag), id) end
        end
      end
    end
  end
end

local function index(id, f, from_created)
  local st, wf = f[1], f[3]
  local created = tonumber(f[5]) and f[5] or '0'
  if KNOWN_STATUS[st] then
    local at = TERMINAL[st] and f[8] or f[7]
    if not tonumber(at) then at = created end
    group(k_status(tag, st), id, at, TERMINAL[st])
  end
  if not from_created then group(SOURCES[1], id, created) end
  if wf and wf ~= '' then group(k_wf_runs(tag, wf), id, created) end
end

-- A queue a run was put back on is in `queues` again, as its enqueue made it
-- (forget_queues may have dropped its name since: the stranded-queue warning
-- and `redflow queues` read it).
local function name_queue(q) redis.pcall('SADD', tag .. ':queues', q) end

-- Back into the key that places it (queued, scheduled, running, suspended).
local function place(id, f)
  local st, q, wf = f[1], f[2], f[3]
  if not wf or wf == '' or not q or q == '' then return end
  local created = tonumber(f[5]) and f[5] or '0'
  if st == 'queued' then
    local ready, waiting = k_ready(tag, q), k_waiting(tag, wf)
    if not lacks(ready, id) then return end  -- there, or a key of another type
    local parked = redis.pcall('ZSCORE', waiting, id)
    if failed(parked) then return end
    if parked then
      if redis.pcall('SISMEMBER', tag .. ':parked', wf) == 0 then
        redis.pcall('SADD', tag .. ':parked', wf)
        put(id, tag .. ':parked')
      end
      return
    end
    if redis.pcall('ZSCORE', k_leases(tag), id) ~= false then return end  -- held: not placed
    local t = tonumber(f[6]) and f[6] or created
    local score = ready_score(f[4], t)
    -- A run holding a rate reservation goes to ready (its claim gives it back).
    if not (f[10] and f[10] ~= '') and parks_at_once(tag, wf, f[9]) then
      redis.call('ZADD', waiting, score, id)
      redis.pcall('SADD', tag .. ':parked', wf)
      put(id, waiting)
      name_queue(q)
    elseif not failed(redis.pcall('ZADD', ready, score, id)) then
      mark_ready(tag, q, score)
      ring(tag, q)
      put(id, ready)
      name_queue(q)
    end
  elseif st == 'scheduled' then
    local sched = k_scheduled(tag, q)
    local due = redis.pcall('ZSCORE', sched, id)
    if failed(due) then return end
    if not due then
      due = tonumber(f[6]) and f[6] or int_str(now_ms())
      if failed(redis.pcall('ZADD', sched, due, id)) then return end
      put(id, sched)
      name_queue(q)
    end
    local listed = redis.pcall('ZSCORE', k_due_queues(tag), q)
    if not failed(listed) and (not listed or tonumber(listed) > tonumber(due)) then
      mark_due(tag, q, tonumber(due))
      put(id, k_due_queues(tag))
    end
  elseif st == 'running' or st == 'suspended' then
    if redis.pcall('SISMEMBER', k_running(tag, wf), id) == 0 then
      redis.pcall('SADD', k_running(tag, wf), id)
      put(id, k_running(tag, wf))
    end
    -- A suspended slot holder is counted by the deadlock rule past 256 slots
    -- (suspend_run.lua). Not reported: every run suspended before that set
    -- existed (an upgrade) is missing from it once, which is no loss.
    if st == 'suspended' and redis.pcall('SISMEMBER', k_wf_suspended(tag, wf), id) == 0 then
      redis.pcall('SADD', k_wf_suspended(tag, wf), id)
    end
  end
end

local n = #entries / 2
local placed = {}
for i = 1, #entries, 2 do
  local id = entries[i]
  -- `f` as index() and place() read it: 1 status, 2 queue, 3 workflow, 4
  -- priority, 5 createdAt, 6 availableAt, 7 updatedAt, 8 finishedAt, 9
  -- maxConcurrency, 10 rateSlot. What indexing needs is read first: most runs
  -- of a large store are finished, and nothing more is read of them.
  local f = redis.pcall('HMGET', k_run(tag, id), 'status', 'updatedAt', 'workflow', 'finishedAt',
    'createdAt')
  if not failed(f) and f[1] then  -- gone, or not a hash: not relisted
    f[7], f[8], f[2], f[4] = f[2], f[4], nil, nil
    index(id, f, src == 1)
    if not TERMINAL[f[1]] then
      local g = redis.call('HMGET', k_run(tag, id), 'queue', 'priority', 'availableAt',
        'maxConcurrency', 'rateSlot')
      f[2], f[4], f[6], f[9], f[10] = g[1], g[2], g[3], g[4], g[5]
      placed[#placed + 1] = { id, f }
    end
  end
end
reindex()
for _, r in ipairs(placed) do place(r[1], r[2]) end
local done = 0
if n >= page then
  redis.pcall('HSET', KEYS[1], 'src', src, 'score', entries[#entries], 'id', entries[#entries - 1])
else
  if src == #SOURCES then src, done = 1, 1 else src = src + 1 end
  redis.pcall('HDEL', KEYS[1], 'score', 'id')  -- (of another type: left alone)
  if src > 1 then
    redis.pcall('HSET', KEYS[1], 'src', src)
  else
    redis.pcall('HDEL', KEYS[1], 'src')
  end
end
return { done, n, out }
