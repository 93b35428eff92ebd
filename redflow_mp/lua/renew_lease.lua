-- renew_lease: extend the leases of runs still held by their token, and report
-- cancellation requests. Used by a worker's heartbeat (one pair) and by the
-- supervisor's lease backstop (one pair per busy child).
--
-- KEYS[1]  leases (ZSET runId -> lease expiry ms)
-- ARGV[1]  tag `{prefix}`      ARGV[2]  lease ms
-- ARGV[3..] pairs: run id, lease token
-- Reply: flat list, per pair: held (1|0), cancelRequestedAt ('' when none)
-- Invariant: never extends a lease whose token differs or whose run left
-- `leases` (the reaper put it back, or it ended): extending it could revive a
-- run another worker took over. A lease that expired while nobody acted on it
-- (a Redis stall or restart kept the holder from renewing; the reaper holds
-- off after such a gap, see reap_runs.lua) is renewed: the holder goes on.
-- flags: allow-oom
-- (Redis >= 7: it runs under OOM. It only moves scores of members that exist, no
-- memory to speak of; refused, every lease lapsed in an OOM longer than a lease
-- while its workers were alive, and once memory came back the reaper could put
-- back runs whose handlers had ended, their finish riding the OOM out.)
local tag = ARGV[1]
local now = now_ms()
local expiry = int_str(now + tonumber(ARGV[2]))
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local f = redis.call('HMGET', k_run(tag, id), 'lease', 'cancelRequestedAt')
  local live = false
  if ARGV[i + 1] ~= '' and f[1] == ARGV[i + 1] then
    live = redis.call('ZSCORE', KEYS[1], id) ~= false
  end
  if live then
    redis.call('ZADD', KEYS[1], 'XX', expiry, id)
    out[#out + 1] = 1
    out[#out + 1] = f[2] or ''
  else
    out[#out + 1] = 0
    out[#out + 1] = ''
  end
end
return out
