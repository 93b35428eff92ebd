-- due_crons: read the cron entries due now, with their definitions, by the
-- server clock. Read-only.
-- flags: no-writes
--
-- KEYS[1]  cron:next   KEYS[2]  cron:def
-- ARGV[1]  tag   ARGV[2]  max entries   ARGV[3]  entries to pass over first (the
--          due ones a leader could not read: they stay due, in front of the others)
-- ARGV[4]  bytes of definitions per reply (at least one definition; '' = no bound)
-- Reply: { now ms, earliest remaining fire time ms or -1, id, fire ms, def json, ... }
-- A definition holds its cron's input (up to max_payload_bytes): the reply stops
-- before the definition that would take it past ARGV[4], and "earliest" is then
-- that entry's fire time (due now: the leader reads again from there).
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT',
  tonumber(ARGV[3]) or 0, tonumber(ARGV[2]))
local budget = tonumber(ARGV[4] or '')
local out = { now, -1 }
local bytes = 0
for i = 1, #due, 2 do
  local def = redis.call('HGET', KEYS[2], due[i]) or ''
  bytes = bytes + #def
  if budget and i > 1 and bytes > budget then
    out[2] = due[i + 1]
    return out
  end
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = def
end
local head = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if head[2] then out[2] = head[2] end
return out
