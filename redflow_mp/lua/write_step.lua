-- write_step: persist one step's outcome for the lease holder (fenced), extend
-- the lease, and report whether cancellation was requested.
--
-- KEYS[1]  run:<id>:steps
-- ARGV[1]  tag `{prefix}`   ARGV[2]  run id   ARGV[3]  lease token
-- ARGV[4]  step name        ARGV[5]  encoded step state (JSON)   ARGV[6]  lease ms
-- Reply: { 1, cancelRequestedAt or '' } | { -1 } when the lease is not ours
local tag = ARGV[1]
local id = ARGV[2]
local lease = k_lease(tag, id)
if redis.call('GET', lease) ~= ARGV[3] then return { -1 } end
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
redis.call('PEXPIRE', lease, ARGV[6])
return { 1, redis.call('HGET', k_run(tag, id), 'cancelRequestedAt') or '' }
