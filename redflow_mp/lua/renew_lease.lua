-- renew_lease: extend the leases of runs still held by their token, and report
-- cancellation requests. Used by a worker's heartbeat (one pair) and by the
-- supervisor's lease backstop (one pair per busy child).
--
-- KEYS[1]  run:<first id>:lease (declared for routing; derived keys share its slot)
-- ARGV[1]  tag `{prefix}`      ARGV[2]  lease ms
-- ARGV[3..] pairs: run id, lease token
-- Reply: flat list, per pair: held (1|0), cancelRequestedAt ('' when none)
-- Invariant: never extends a lease whose token differs (a bare PEXPIRE could
-- revive a run that another worker took over).
local tag = ARGV[1]
local lease_ms = ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local lease = k_lease(tag, id)
  if redis.call('GET', lease) == ARGV[i + 1] then
    redis.call('PEXPIRE', lease, lease_ms)
    out[#out + 1] = 1
    out[#out + 1] = redis.call('HGET', k_run(tag, id), 'cancelRequestedAt') or ''
  else
    out[#out + 1] = 0
    out[#out + 1] = ''
  end
end
return out
