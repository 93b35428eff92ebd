-- scan_queues: a bounded part of a registered queue list's scan, or of its
-- registration (queueset.py: lists past SCAN_CHUNK queues), so that no single
-- call reads every queue of a long list. claim_run.lua's scan and registration
-- read each queue's head in one call: 5,000 queues each holding runs were
-- 10,000 commands, 50-320 ms of Redis blocking every other client, at each
-- child's start and every SCAN_EVERY seconds of each child.
--
-- KEYS[1]  qset:<digest> (the registered list: ZSET name -> position)
-- KEYS[2]  the list being built ('' key name unused when scanning): one per
--          builder, renamed onto KEYS[1] by its last chunk, so that no claim
--          ever reads a list with queues missing (a builder that dies half way
--          leaves a key that expires, never a short list)
-- ARGV[1]  tag   ARGV[2]  mode: 'scan' | 'build'
-- scan:  ARGV[3] first position (0-based), ARGV[4] count: the queues of the list
--        at positions [first, first + count) are read
-- build: ARGV[3] '1' for the first chunk (starts KEYS[2] afresh), ARGV[4] '1' for
--        the last (KEYS[2] becomes KEYS[1], for QSET_TTL_MS), ARGV[5] the first
--        position, ARGV[6 ..] the chunk's names
-- Reply: scan: the number of queues read (fewer than count: the end of the list;
--        -1: no list, or of another type: register it); build: the chunk's size
--        (-1: KEYS[2] is gone since the chunk before: build again from the first)
-- Each queue read that holds runs is listed in ready-queues at its head (as the
-- claim's scan does: a damaged or deleted index strands no run). Cost: one
-- EXISTS per 32 queues of the chunk, and a ZRANGE and a ZADD per queue of the
-- blocks of 32 holding runs.
local tag = ARGV[1]
local QSET_TTL_MS = 86400000  -- as claim_run.lua: a day after its registration
local index = k_ready_queues(tag)

-- As the claim's scan: one EXISTS per block of 32 queues finds the blocks holding
-- runs (an empty ready set is no key); only their heads are read.
local BLOCK = 32
local function heal(names)
  for from = 1, #names, BLOCK do
    local to = math.min(#names, from + BLOCK - 1)
    local block = {}
    for i = from, to do block[#block + 1] = k_ready(tag, names[i]) end
    if redis.call('EXISTS', unpack(block)) > 0 then
      for i = from, to do
        local head = redis.pcall('ZRANGE', block[i - from + 1], 0, 0, 'WITHSCORES')
        if not failed(head) and head[1] then redis.pcall('ZADD', index, head[2], names[i]) end
      end
    end
  end
end

if ARGV[2] == 'scan' then
  local first = tonumber(ARGV[3])
  local names = redis.pcall('ZRANGE', KEYS[1], first, first + tonumber(ARGV[4]) - 1)
  if failed(names) or (#names == 0 and redis.call('EXISTS', KEYS[1]) == 0) then return -1 end
  heal(names)
  return #names
end

if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  -- gone since the chunk before (expired: a builder stalled a minute; evicted;
  -- deleted): filled on from here, it would become a list without its first
  -- queues, whose runs no claim of it takes. The builder starts again.
  return -1
end
local pos = tonumber(ARGV[5])
local args, names = {}, {}
for i = 6, #ARGV do
  args[#args + 1] = pos + i - 6
  args[#args + 1] = ARGV[i]
  names[#names + 1] = ARGV[i]
end
if #args > 0 then redis.call('ZADD', KEYS[2], unpack(args)) end
if ARGV[4] == '1' then
  redis.call('RENAME', KEYS[2], KEYS[1])
  redis.call('PEXPIRE', KEYS[1], QSET_TTL_MS)
else
  redis.call('PEXPIRE', KEYS[2], 60000)  -- a builder that died: gone in a minute
end
heal(names)
return #names
