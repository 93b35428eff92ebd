-- forget_queues: drop queue names from the `queues` set (kept for listing only)
-- once they are idle: not served by a live supervisor, nothing ready, nothing
-- scheduled. Their bell lists and due-queues entries go too (the promoter drops
-- an entry only once it is due: a run scheduled for the year 2999 and canceled
-- kept its queue there for good). A later enqueue adds a name back.
--
-- KEYS[1]  queues
-- ARGV[1]  tag   ARGV[2]  n, the number of served queues
-- ARGV[3 .. 2+n]  queues served by live supervisors (never forgotten)
-- ARGV[3+n ..]    candidate queue names (a page of an SSCAN of `queues`)
-- Reply: { forgotten queue, ... }
-- A candidate whose ready set is empty also leaves `ready-queues`.
-- Invariant: a queue with a ready or scheduled run is never forgotten (nor
-- taken out of due-queues: its scheduled set is empty). Cost: two ZCARDs and a
-- ZREM per candidate.
local tag = ARGV[1]
local n = tonumber(ARGV[2])
local served = {}
for i = 3, 2 + n do served[ARGV[i]] = true end
local out = {}
for i = 3 + n, #ARGV do
  local q = ARGV[i]
  -- A ready or scheduled key of another type (see `failed`): what the queue holds
  -- is unknown, so it is not idle and is kept (the key check names the key). It
  -- failed the whole call, on the same page at every tick: no queue was forgotten.
  local idle = redis.pcall('ZCARD', k_ready(tag, q)) == 0
  -- a stale entry of the index of ready queues (claims of one queue leave them)
  if idle then redis.pcall('ZREM', k_ready_queues(tag), q) end
  if not served[q] and idle and redis.pcall('ZCARD', k_scheduled(tag, q)) == 0 then
    if redis.call('SREM', KEYS[1], q) == 1 then
      redis.call('DEL', k_bell(tag, q))
      redis.pcall('ZREM', k_due_queues(tag), q)  -- an index: see `failed`
      out[#out + 1] = q
    end
  end
end
return out
