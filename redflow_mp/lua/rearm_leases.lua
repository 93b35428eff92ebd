-- rearm_leases: running runs with no entry in `leases` get one, a lease from
-- now. Only a key Redis lost (`leases` evicted under an evicting
-- maxmemory-policy, or deleted) leaves such a run: every script that marks a
-- run running writes its entry, and every exit from running removes both. The
-- lease check (lease_held in _lib.lua) needs the entry, so the holder's next
-- renewal or write found its lease lost and it gave the run up, and the reaper,
-- which reads only `leases`, never put it back: the run stayed running for
-- good. With the entry back, a holder still at work renews it (its token is
-- still the run's) and one that gave up lets it expire: the reaper requeues it.
--
-- KEYS[1]  leases (ZSET runId -> lease expiry ms)
-- ARGV[1]  tag   ARGV[2]  lease ms   ARGV[3 ..] run ids (a page of runs:status:running)
-- Reply: { run id given an entry, ... }
-- Cost: one HGET and one ZSCORE per id given.
local tag = ARGV[1]
local until_ms = int_str(now_ms() + tonumber(ARGV[2]))
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local status = redis.pcall('HGET', k_run(tag, id), 'status')
  if status == 'running' and redis.pcall('ZSCORE', KEYS[1], id) == false then
    if not failed(redis.pcall('ZADD', KEYS[1], until_ms, id)) then out[#out + 1] = id end
  end
end
return out
