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
-- ARGV[9]  claim this run id only ('' = take the next from the queues; formerly the
--          inline path of step.run_workflow, kept for tools and tests)
-- ARGV[10] flags, a sum: 1 when the caller was just woken by a bell: if runs remain
--          after its claim, ring again to wake the next idle worker (enqueue rings
--          only when a ready set goes from empty to non-empty); 2 when this is the
--          resend of a claim with the same token whose reply was lost: a run that
--          claim took is answered again (retake, below) before any other
-- ARGV[11] number of queues n; ARGV[12 .. 11+n] queue names (ties go to the first);
--          past 32 queues, optionally ARGV[12+n] a digest to register the list under
--          (qset:<digest>, read by the calls below) and ARGV[13+n] the turn (below)
--          | '-1': a registered list: ARGV[12] its digest, ARGV[13] its length n,
--          ARGV[14] the turn (ties go to the queue at that 0-based position, then to
--          the ones after it: the list rotated by turn), ARGV[15] '1' = read every
--          queue of the list, not only those ready-queues lists (the safety net: it
--          lists the non-empty ones there again)
-- Reply: { finish result, claimed, dropped }
--   finish result: '' (nothing to finish) | 'lease-lost' | the run's new status
--     (also when this token's finish was already applied: a resend after a lost
--     reply learns the outcome)
--   claimed: {} or { id, workflow, queue, inputJson, attempt, maxAttempts, createdAt,
--            parentRunId, timeoutMs, cronId, startedAt, { step, json, ... } | '',
--            availableAt, unread, unreadBytes }: the steps are '' for a run that
--            never started; unread and unreadBytes are left out when the step
--            records are all in the reply, else unread is how many there are (more
--            than 1,000, or more than 1 MiB in all: the worker reads them by HSCAN;
--            the steps are then ''), unreadBytes their size ('' if unknown)
--   dropped: { '<queue> <id>', ... } ready entries whose run record was gone; left
--     out when there is none (the reply is then { finish result, claimed }: each
--     table of a reply costs redis-server's conversion about 3,500 instructions)
--   claimed is 'register' when the registered list is gone (expired, or of another
--     type): the finish was applied; send the claim again with the list
-- Invariants: a finish is applied only if ARGV[6] still holds the lease (fencing);
-- the claim takes the lowest ready score over all the queues (highest priority,
-- then oldest), in O(n + log N) for a list in ARGV (past 32 queues the empty ones
-- cost one EXISTS per 32, not a ZRANGE each), for a registered list in O(log N)
-- plus the entries of ready-queues walked (one page of 32 and a head or two when
-- the bounds are exact; at most 8 pages, then O(m), m the queues of the list it
-- holds); a claimed run is running, leased (hash field +
-- `leases` entry) and counted in wf-running:<wf>; a run over its workflow's
-- max_concurrency is parked in wf-waiting:<wf>, never dropped; a run over its
-- workflow's rate limit is scheduled at its reserved start (rate_deferred). At
-- most 32 skipped entries (stale, canceled, parked, rate-limited) per call; when
-- more remain, the queue's bell rings so that a worker goes on at once.
local tag = ARGV[1]
local QSET_TTL_MS = 86400000  -- a registered list lives a day after its registration
DROPPED = nil  -- per call (the helpers may live in a loaded function library)
local lease_ms = tonumber(ARGV[2])
local token = ARGV[3]
local mode = ARGV[4]
local now = now_ms()
local finished = ''
-- A claim follows the finish: the bell of a run its freed slot releases waits
-- until the claim is done (RING_LATER in _lib.lua), rung only if it is still ready.
RING_LATER = nil
if token ~= '' then RING_LATER = 0 end

if mode ~= '' then
  local id = ARGV[5]
  local held = ARGV[6]
  -- One read of the run for the lease check and the finish (finish_fields).
  local f = finish_fields(k_run(tag, id))
  -- A terminal finish takes the lease entry with the check (lease_check: unlease).
  local terminal = mode ~= 'retry' and mode ~= 'requeue'
  local ok, done, unleased = lease_check(tag, id, f, held, now, terminal)
  if not ok then
    finished = done or 'lease-lost'
  elseif mode == 'retry' then
    finished = retry_helpers().retry(tag, id, ARGV[7], tonumber(ARGV[8]) or 0, now, held)
  elseif mode == 'requeue' then
    finished = retry_helpers().requeue(tag, id, ARGV[7], false, 0, now, held)
  elseif mode == 'succeeded' then
    finished = finalize(tag, id, mode, 'outputJson', ARGV[7], now, held, f, unleased)
  else
    finished = finalize(tag, id, mode, 'errorJson', ARGV[7], now, held, f, unleased)
  end
end

if token == '' then return { finished, {} } end
if ARGV[10] == '2' or ARGV[10] == '3' then
  -- A resent claim (its reply was lost: the caller cannot tell whether it ran): the run that the
  -- claim with `token` took, if it did, is running under that token still. It is leased again and
  -- answered as `take` answered, so that it starts now, not a lease later once the reaper has put it
  -- back (which also wrote a put-back into its history). Read: the runs that entered `running` in the
  -- last two leases, newest first, at most 1,000 (as requeue_claimed); only a resend pays it. nil:
  -- none (no run taken, or put back since): claim anew.
  local function retake(tag, token, lease_ms, now)
    local recent = redis.pcall('ZREVRANGEBYSCORE', k_status(tag, 'running'), '+inf',
      int_str(now - 2 * lease_ms), 'LIMIT', 0, 1000)
    if failed(recent) then return nil end
    for _, id in ipairs(recent) do
      local run = k_run(tag, id)
      if redis.pcall('HGET', run, 'lease') == token and redis.call('ZSCORE', k_leases(tag), id) then
        local f = redis.call('HMGET', run, 'status', 'workflow', 'cancelRequestedAt',
          'maxConcurrency', 'inputJson', 'attempt', 'maxAttempts', 'createdAt', 'parentRunId',
          'timeoutMs', 'cronId', 'startedAt', 'queue', 'availableAt', 'rateSlot')  -- TAKE_FIELDS
        if f[1] == 'running' then
          local steps, unread = claim_steps(tag, id, f, now)
          if not steps then return nil end
          redis.call('ZADD', k_leases(tag), int_str(now + lease_ms), id)
          return claim_reply(id, f[13], f, f[12], steps, unread)
        end
      end
    end
    return nil
  end
  -- (a closure made only by a resend: no steady-state call pays for it)
  local again = retake(tag, token, lease_ms, now)
  if again then
    ring_later_flush(tag)  -- the rings the finish above deferred
    if DROPPED then return { finished, again, DROPPED } end
    return { finished, again }
  end
end

local function claim_next()
  local nq = tonumber(ARGV[11])
  local only = ARGV[9]
  local woken = ARGV[10] == '1' or ARGV[10] == '3'
  if only ~= '' then
    for i = 1, nq do
      local ready = k_ready(tag, ARGV[11 + i])
      local score = redis.call('ZSCORE', ready, only)
      if score then
        redis.call('ZREM', ready, only)
        local got = take(tag, only, ARGV[11 + i], score, token, lease_ms, now)
        if got then return got end
        return nil
      end
    end
    return nil
  end

  if nq == 1 then
    local q = ARGV[12]
    local ready = k_ready(tag, q)
    for _ = 1, 32 do
      local head = redis.call('ZPOPMIN', ready)
      if not head[1] then break end
      local got = take(tag, head[1], q, head[2], token, lease_ms, now)
      if got then  -- (as `claimed` below: the closures are made past this common case)
        if woken and redis.call('ZCARD', ready) > 0 then ring(tag, q) end
        return got
      end
    end
    -- 32 entries skipped (parked, rate-limited, stale) and more remain: ring, so
    -- that a worker (this one, blocking next) goes on at once. Else the set is
    -- empty: out of ready-queues (a claim that found nothing: not the hot path).
    if redis.call('ZCARD', ready) > 0 then
      ring(tag, q)
    else
      redis.pcall('ZREM', k_ready_queues(tag), q)
    end
    return nil
  end

  local function claimed(q, got)
    if woken and redis.call('ZCARD', k_ready(tag, q)) > 0 then ring(tag, q) end
    return got
  end

  -- The pop of the loops over several queues' heads (from_intersection and the
  -- loop that reads every head): take the head of `q`'s ready set. Returns the
  -- claim's reply, or nil and `q`'s new head score (nil: empty); with `rebound`
  -- (a registered list) `q`'s bound in ready-queues becomes that head.
  local function pop_head(q, rebound)
    local ready = k_ready(tag, q)
    local head = redis.call('ZPOPMIN', ready)
    if head[1] then
      local got = take(tag, head[1], q, head[2], token, lease_ms, now)
      if got then return claimed(q, got) end
    end
    local nxt = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
    if rebound then
      if nxt[1] then
        redis.pcall('ZADD', k_ready_queues(tag), 'XX', nxt[2], q)
      else
        redis.pcall('ZREM', k_ready_queues(tag), q)
      end
    end
    return nil, nxt[1] and tonumber(nxt[2]) or nil
  end

  -- A registered list (not a scan): walk ready-queues from the lowest bound, a page
  -- of PAGE at a time; the queues of the list among them (ZMSCORE) have their head
  -- read, and the walk stops at a bound above the lowest head found: no queue
  -- further on can hold a lower one (a bound is never above its queue's head). The
  -- bounds read are set to their heads (and empty queues removed) after the walk;
  -- the queue claimed from gets its new head. With the bounds exact (the usual
  -- case) a claim reads one page and a head or two, however many queues are
  -- served and hold runs. Past PAGES pages (many queues not in the list ahead of
  -- those in it) the intersection below takes over.
  if ARGV[11] == '-1' and ARGV[15] ~= '1' then
    local index, qs = k_ready_queues(tag), k_qset(tag, ARGV[12])
    local n, turn = tonumber(ARGV[13]), tonumber(ARGV[14]) or 0
    local PAGE, PAGES = 32, 8
    -- The queue of the list holding the lowest head (ties: the lowest position
    -- after `turn`); nil: none; false: not found within PAGES pages, or an index
    -- or list of another type.
    local function lowest()
      local best, best_h, best_r = nil, nil, nil
      local fixes, done, from = {}, false, 0
      for _ = 1, PAGES do
        local page = redis.pcall('ZRANGE', index, from, from + PAGE - 1, 'WITHSCORES')
        if failed(page) then return false end
        local members = {}
        for i = 1, #page, 2 do members[#members + 1] = page[i] end
        if #members == 0 then
          done = true
          break
        end
        local at = redis.pcall('ZMSCORE', qs, unpack(members))
        if failed(at) then return false end
        for j = 1, #members do
          local bound = tonumber(page[2 * j])
          if best_h and bound > best_h then
            done = true
            break
          end
          if at[j] then
            local q = members[j]
            local head = redis.call('ZRANGE', k_ready(tag, q), 0, 0, 'WITHSCORES')
            if not head[1] then
              fixes[#fixes + 1] = { q }
            else
              local h, r = tonumber(head[2]), (tonumber(at[j]) - turn) % n
              if h > bound then fixes[#fixes + 1] = { q, head[2] } end
              if not best_h or h < best_h or (h == best_h and r < best_r) then
                best, best_h, best_r = q, h, r
              end
            end
          end
        end
        if done or #members < PAGE then
          done = true
          break
        end
        from = from + PAGE
      end
      for _, fix in ipairs(fixes) do
        if fix[2] then
          redis.pcall('ZADD', index, 'XX', fix[2], fix[1])
        else
          redis.pcall('ZREM', index, fix[1])
        end
      end
      if not done then return false end
      return best
    end
    local q = lowest()
    for _ = 1, 32 do
      if not q then break end
      local ready = k_ready(tag, q)
      local head = redis.call('ZPOPMIN', ready)
      local got = nil
      if head[1] then got = take(tag, head[1], q, head[2], token, lease_ms, now) end
      local nxt = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
      if nxt[1] then
        redis.pcall('ZADD', index, 'XX', nxt[2], q)
      else
        redis.pcall('ZREM', index, q)
      end
      if got then return claimed(q, got) end
      q = lowest()
    end
    if q then  -- skipped 32 and more remain (above)
      ring(tag, q)
      return nil
    end
    if q == nil then
      if redis.call('EXISTS', qs) == 0 then return 'register' end
      return nil
    end
  end

  -- A registered list whose walk above gave up (many queues not in the list
  -- listed ahead of those in it: another app's backlog on the prefix): the list
  -- intersected with ready-queues (`got`: name, bound, ...; in the order of the
  -- bounds), the heads read lazily in that order, only those whose bound is at
  -- most the lowest head read so far (a bound is never above its queue's head:
  -- none further on can hold a lower or an equal head), each read one's bound set
  -- to its head, the empty ones unlisted. The order is that of reading every head
  -- (ties to the lowest position after `turn`, read by ZSCORE of the list on a
  -- tie), at
  -- the cost of the intersection and a head or two, not a head per queue of the
  -- list holding runs (5,000 of them were 42-60 ms of Redis a claim).
  local function from_intersection(got, qs, n, turn)
    local index = k_ready_queues(tag)
    local heads, pos, names = {}, {}, {}  -- of the candidates read, 1 .. k
    local nn, k = #got, 0  -- candidate i: got[i] (its bound: ZSCORE when needed)
    local bound = {}
    local function bound_of(i)
      if not bound[i] then bound[i] = tonumber(redis.call('ZSCORE', index, got[i])) or 0 end
      return bound[i]
    end
    local function extend()  -- read the candidates that may hold the lowest head
      local low = nil
      for i = 1, k do
        if heads[i] and (not low or heads[i] < low) then low = heads[i] end
      end
      while k < nn and (not low or bound_of(k + 1) <= low) do
        k = k + 1
        local q = got[k]
        names[k] = q
        local head = redis.call('ZRANGE', k_ready(tag, q), 0, 0, 'WITHSCORES')
        if head[1] then
          local h = tonumber(head[2])
          heads[k] = h
          if h > bound_of(k) then redis.pcall('ZADD', index, 'XX', head[2], q) end
          if not low or h < low then low = h end
        else
          redis.pcall('ZREM', index, q)  -- emptied by a claim
        end
      end
    end
    local function at(i)  -- the position of candidate i in the list (read on a tie)
      if not pos[i] then pos[i] = tonumber(redis.call('ZSCORE', qs, names[i])) or 0 end
      return (pos[i] - turn) % n
    end
    local function before(i, j)
      if heads[i] ~= heads[j] then return heads[i] < heads[j] end
      return at(i) < at(j)
    end
    for _ = 1, 32 do
      extend()
      local best = nil
      for i = 1, k do
        if heads[i] and (best == nil or before(i, best)) then best = i end
      end
      if best == nil then return nil end
      local claim, h = pop_head(names[best], true)
      if claim then return claim end
      heads[best] = h
    end
    for i = 1, k do
      if heads[i] then ring(tag, names[i]) end  -- skipped 32 and more remain (above)
    end
    return nil
  end

  -- Several queues. The candidates: names[i] at position pos[i] of the worker's
  -- list. A registered list (ARGV[11] = '-1') whose walk above gave up is
  -- intersected with ready-queues, the queues whose ready set may hold runs
  -- (from_intersection, above): the cost follows the queues holding runs, not
  -- the queues served.
  -- Else (a list in ARGV, or the scan of a registered one) every head is read:
  -- past HEAD_BLOCK queues one EXISTS per block of HEAD_BLOCK finds the blocks
  -- holding runs (an empty ready set is no key) and only their heads are read.
  -- Either way every candidate's head is compared: the order is the same.
  local HEAD_BLOCK = 32
  local names, pos, n, turn = {}, {}, nq, 0
  local scan, heal = true, false  -- read every queue; list the non-empty ones
  if ARGV[11] == '-1' then
    local qs = k_qset(tag, ARGV[12])
    n, turn, scan = tonumber(ARGV[13]), tonumber(ARGV[14]) or 0, ARGV[15] == '1'
    local got
    if not scan then
      got = redis.pcall('ZINTER', 2, k_ready_queues(tag), qs, 'WEIGHTS', 1, 0)
      if failed(got) then scan = true end  -- ready-queues of another type: read them all
    end
    heal = scan
    if scan then
      got = redis.pcall('ZRANGE', qs, 0, -1)  -- in the list's order: positions 0, 1, ...
      if failed(got) or #got == 0 then return 'register' end
      for i = 1, #got do names[i], pos[i] = got[i], i - 1 end
    else
      if #got == 0 and redis.call('EXISTS', qs) == 0 then return 'register' end
      return from_intersection(got, qs, n, turn)
    end
  else
    for i = 1, nq do names[i], pos[i] = ARGV[11 + i], i - 1 end
    local digest = ARGV[12 + nq]
    if digest and digest ~= '' then  -- register the list: qset:<digest>, position -> name
      turn, heal = tonumber(ARGV[13 + nq]) or 0, true
      local qs = k_qset(tag, digest)
      redis.call('DEL', qs)
      for first = 1, nq, 400 do
        local args = {}
        for i = first, math.min(first + 399, nq) do
          args[#args + 1] = i - 1
          args[#args + 1] = names[i]
        end
        redis.call('ZADD', qs, unpack(args))
      end
      redis.call('PEXPIRE', qs, QSET_TTL_MS)
    end
  end
  local nn = #names
  local heads = {}
  local function read_heads(from, to)
    for i = from, to do
      local head = redis.call('ZRANGE', k_ready(tag, names[i]), 0, 0, 'WITHSCORES')
      if head[1] then
        heads[i] = tonumber(head[2])
        if heal then redis.pcall('ZADD', k_ready_queues(tag), head[2], names[i]) end
      elseif not scan then
        redis.pcall('ZREM', k_ready_queues(tag), names[i])  -- emptied by a claim
      end
    end
  end
  if not scan or nn <= HEAD_BLOCK then
    read_heads(1, nn)
  else
    local block = {}
    for from = 1, nn, HEAD_BLOCK do
      local to = math.min(nn, from + HEAD_BLOCK - 1)
      for i = from, to do block[i - from + 1] = k_ready(tag, names[i]) end
      for j = to - from + 2, HEAD_BLOCK do block[j] = nil end
      if redis.call('EXISTS', unpack(block)) > 0 then read_heads(from, to) end
    end
  end
  -- Lowest score first; ties go to the queue at position `turn`, then the ones
  -- after it (the list rotated by turn).
  local function before(i, j)
    if heads[i] ~= heads[j] then return heads[i] < heads[j] end
    return (pos[i] - turn) % n < (pos[j] - turn) % n
  end
  for _ = 1, 32 do
    local best = nil
    for i = 1, nn do
      if heads[i] and (best == nil or before(i, best)) then best = i end
    end
    if best == nil then break end
    -- a registered list: the queue's bound becomes its new head
    local got, h = pop_head(names[best], ARGV[11] == '-1')
    if got then return got end
    heads[best] = h
  end
  for i = 1, nn do
    if heads[i] then ring(tag, names[i]) end  -- skipped 32 and more remain (above)
  end
  return nil
end

-- The deferred rings go out even when the claim fails (a key of the wrong type):
-- the finish above was applied and the run it released must not wait unrung.
local ok, got = pcall(claim_next)
ring_later_flush(tag)
if not ok then
  if type(got) == 'table' and got.err then raise(got.err) end
  error(got, 0)
end
if DROPPED then return { finished, got or {}, DROPPED } end
return { finished, got or {} }
