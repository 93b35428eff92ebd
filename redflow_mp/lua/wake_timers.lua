-- wake_timers: wake the suspended runs whose wake-up time (a sleep's end or a
-- wait's deadline) has come, in a bounded batch.
--
-- KEYS[1]  timers (ZSET runId -> wake-up time ms)
-- ARGV[1]  tag   ARGV[2]  batch size
-- Reply: { entries read, earliest remaining wake-up ms or -1, lateness ms of each
--          run woken, ... } (entries read == batch: call again)
-- Cost: one range read of the due entries plus their wakes, however many runs
-- sleep (a suspended run's wake-up is one ZSET member).
local tag = ARGV[1]
local batch = tonumber(ARGV[2])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
local out = { #due / 2, -1 }
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
  if wake(tag, due[i], now) then out[#out + 1] = now - tonumber(due[i + 1]) end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[1] then out[2] = tonumber(head[2]) end
return out
