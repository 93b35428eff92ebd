-- count_depths: the sizes behind the /metrics gauges of one chunk of queues and
-- workflows, so that a scrape sends one command per chunk instead of one per
-- key (25,005 commands for 5,000 queues and workflows). Read-only.
-- flags: no-writes
--
-- KEYS: none (each key is derived from the hash-tagged prefix, as reap_runs does)
-- ARGV[1]  tag   ARGV[2]  queue names, a JSON array   ARGV[3]  workflow names,
--          a JSON array (two arguments, not one per name: the client packs a
--          command's arguments one by one, 45 ms for 10,000 names in Python)
-- Reply: { ready_1, scheduled_1, ..., ready_n, scheduled_n, running_1, ... }:
--   ZCARD of each queue's ready and scheduled sets, then SCARD of each
--   workflow's wf-running set; -1 where the key is of another type (written by
--   hand or by another program: that one value is left out, keycheck names it).
-- Cost: one ZCARD or SCARD per name; the caller bounds the chunk.
local tag = ARGV[1]
local queues = cjson.decode(ARGV[2])
local workflows = cjson.decode(ARGV[3])
local out = {}

local function card(cmd, key)
  local reply = redis.pcall(cmd, key)
  if type(reply) == 'table' then return -1 end
  return reply
end

for _, q in ipairs(queues) do
  out[#out + 1] = card('ZCARD', k_ready(tag, q))
  out[#out + 1] = card('ZCARD', k_scheduled(tag, q))
end
for _, wf in ipairs(workflows) do
  out[#out + 1] = card('SCARD', k_running(tag, wf))
end
return out
