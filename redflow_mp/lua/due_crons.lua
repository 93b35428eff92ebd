-- due_crons: read the cron entries due now, with their definitions, by the
-- server clock. Read-only.
-- flags: no-writes
--
-- KEYS[1]  cron:next   KEYS[2]  cron:def
-- ARGV[1]  tag   ARGV[2]  max entries   ARGV[3]  entries to pass over first (the
--          due ones a leader could not read: they stay due, in front of the others)
-- Reply: { now ms, earliest remaining fire time ms or -1, id, fire ms, def json, ... }
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT',
  tonumber(ARGV[3]) or 0, tonumber(ARGV[2]))
local out = { now, -1 }
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i]) or ''
end
local head = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if head[2] then out[2] = head[2] end
return out
