-- resume_run: a failed or canceled run goes back to `queued` as the same run,
-- with the next attempt number, keeping its succeeded steps (they replay from
-- their records); its other step records (failed, or left `running` by a
-- crash) are dropped, so those steps run again.
--
-- KEYS[1]  run:<id>
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  resume token (makes a resend safe)
-- ARGV[4]  mode: '' resume, reading the step records in this call if they are
--          few (up to STEPS_INLINE records of STEPS_INLINE_BYTES in all, as the
--          claim); 'page' drop the records to drop of one HSCAN page (ARGV[5]
--          cursor, ARGV[6] COUNT), the run left failed or canceled; 'paged'
--          resume, the records having been dropped by pages (none is read)
-- Reply: { 1, 'queued', attempt } resumed (also a resend of this token's resume)
--      | { 0, '' } unknown run | { -1, status } not failed or canceled: nothing changed
--      | { 2, status, count } too many records for one call: nothing changed;
--        drop them by pages of `count` ('page'), then resume ('paged')
--      | { 3, cursor, records, bytes } a page done ('0': the last one) and what
--        it held (names and records): the client sizes the next page's COUNT by it
-- Invariants: one transition, like a retry: the status indexes move together,
-- the run enters its queue's ready set (priority band, now) and the queue's bell
-- rings; the concurrency gate and the rate limit apply at its claim as for any
-- queued run. The error, output, finish time, cancel request and crash count of
-- the previous attempts are cleared (each attempt's outcome stays in the run's
-- attempts history: the last one, implied by those fields, is written out). maxAttempts grows by the run's attempt budget (its maxAttempts
-- when first resumed), so a resumed run gets its retries again. The idempotency
-- key (if it still names the run, or is gone) is held again with no expiry while
-- the run is unfinished. Cost: the run's step records are read once, in this
-- call if they are few, else by HSCAN pages of about STEPS_INLINE_BYTES (one
-- HGETALL of a million records held Redis for seconds). Only the lease holder
-- writes step records and a failed or canceled run has none: pages read before
-- the resume see what it would have. (A resume refused after its pages, its
-- ready set of another type, leaves the run failed without the records dropped.)
local tag = ARGV[1]
local id = ARGV[2]
local run = KEYS[1]
local mode = ARGV[4] or ''
-- (the run hash of another type: refused naming it, nothing written)
local f = call_on(run, 'HMGET', run, 'status', 'queue', 'workflow', 'attempt', 'maxAttempts',
  'priority', 'idempotencyKey', 'attemptBudget', 'resumeToken', 'stepBytes')
local status = f[1]
if not status then return { 0, '' } end
if ARGV[3] ~= '' and f[9] == ARGV[3] and not TERMINAL[status] then
  return { 1, status, finite(f[4]) or 1 }
end
if status ~= 'failed' and status ~= 'canceled' then return { -1, status } end
local q = f[2]
if not q or q == '' or not f[3] or f[3] == '' then return { -1, status } end
-- Only succeeded steps are kept (their records start {"seq":N,"status":"succeeded").
local steps = k_steps(tag, id)
local function drop(records)
  local dropped = 0
  for i = 1, #records, 2 do
    if not string.match(records[i + 1], '^{"seq":%d+,"status":"succeeded"') then
      redis.call('HDEL', steps, records[i])
      dropped = dropped + #records[i] + #records[i + 1]
    end
  end
  -- stepBytes (count_step_bytes) follows; pcall: a field that is not a number
  -- must not fail the resume.
  if dropped > 0 then redis.pcall('HINCRBY', run, 'stepBytes', -dropped) end
end
if mode == 'page' then
  local page = redis.pcall('HSCAN', steps, ARGV[5], 'COUNT', tonumber(ARGV[6]))
  if failed(page) then return { 3, '0' } end  -- (its claim fails it as corrupted)
  drop(page[2])
  local bytes = 0  -- what the page brought: the client sizes the next one by it
  for i = 1, #page[2] do bytes = bytes + #page[2][i] end
  return { 3, page[1], #page[2] / 2, bytes }
end
if mode == '' then
  local n = redis.pcall('HLEN', steps)
  -- stepBytes is a hint: missing (runs recorded before it), or not a positive
  -- number, says nothing of their size, and more than one record goes by pages
  -- (48 steps of 8 MiB were read in this call, longer than a client waits).
  local size = finite(f[10])
  if size and size < 1 then size = nil end
  if not failed(n) and (n > STEPS_INLINE or (size or 0) > STEPS_INLINE_BYTES
      or not size and n > 1) then
    local count = 1  -- the client sizes the next pages by what came (hashpages)
    if size then
      count = math.max(1, math.min(STEPS_INLINE, math.floor(n * STEPS_INLINE_BYTES / size)))
    end
    return { 2, status, count }
  end
end
local now = now_ms()
local attempt = (finite(f[4]) or 1) + 1
local budget = finite(f[8]) or finite(f[5]) or 1
if budget < 1 then budget = 1 end
local max_attempts = attempt - 1 + budget
-- Placed first (see `failed` in _lib.lua): a ready set of another type fails the
-- call with the run unchanged.
local score = ready_score(f[6], now)
local placed = redis.pcall('ZADD', k_ready(tag, q), score, id)
if failed(placed) then refuse(k_ready(tag, q), placed) end
mark_ready(tag, q, score)
-- The ended execution's history entry, implied by the fields cleared below, is
-- written out first (write_final_attempt, _lib.lua).
write_final_attempt(tag, id)
redis.call('HDEL', run, 'errorJson', 'outputJson', 'finishedAt', 'cancelRequestedAt',
  'cancelReason', 'doneToken', 'crashCount', 'rateSlot')
-- As digits (int_str): a budget past 2^53 (Retries(max_attempts=sys.maxsize), "retry
-- for ever") came out as "9.2233720368547758e+18", and the claim failed the run
-- as a corrupted record (maxAttempts is not an integer).
redis.call('HSET', run, 'status', 'queued', 'attempt', int_str(attempt),
  'maxAttempts', int_str(max_attempts), 'attemptBudget', int_str(budget), 'availableAt', now,
  'updatedAt', now, 'resumedAt', now, 'resumeToken', ARGV[3])
if mode == '' then
  local records = redis.pcall('HGETALL', steps)
  if failed(records) then records = {} end  -- (its claim fails it as corrupted)
  drop(records)
end
move_status(tag, id, status, 'queued', now)
-- A cascade still owed is not: its wait step's replay resumes the children.
redis.pcall('ZREM', k_cascades(tag), id)
local key = f[7]
if key and key ~= '' then
  local idem = k_idem(tag, f[3], key)
  local holder = redis.pcall('GET', idem)
  if holder == id then
    redis.call('PERSIST', idem)
  elseif not holder then
    redis.call('SET', idem, id)
  end
end
ring(tag, q)
return { 1, 'queued', attempt }
