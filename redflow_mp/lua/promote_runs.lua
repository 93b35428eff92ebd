-- promote_runs: move due members of each queue's scheduled set to its ready
-- list (scheduled -> queued), in bounded batches.
--
-- KEYS[1]  queues (SET of known queues)
-- ARGV[1]  tag   ARGV[2]  batch size per queue
-- Reply: { promoted count, earliest remaining due time ms or -1 }
local tag = ARGV[1]
local batch = tonumber(ARGV[2])
local now = now_ms()
local promoted = 0
local earliest = -1
for _, q in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local sched = k_scheduled(tag, q)
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(due) do
    redis.call('ZREM', sched, id)
    local run = k_run(tag, id)
    if redis.call('HGET', run, 'status') == 'scheduled' then
      redis.call('HSET', run, 'status', 'queued', 'updatedAt', now)
      move_status(tag, id, 'scheduled', 'queued', now)
      redis.call('LPUSH', k_ready(tag, q), id)
      ring(tag, q)
      promoted = promoted + 1
    end
  end
  local head = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
  if head[2] then
    local at = tonumber(head[2])
    if earliest < 0 or at < earliest then earliest = at end
  end
end
return { promoted, earliest }
