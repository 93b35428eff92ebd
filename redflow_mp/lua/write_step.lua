-- write_step: persist one step's outcome for the lease holder (fenced), extend
-- the lease, and report whether cancellation was requested.
--
-- KEYS[1]  run:<id>:steps
-- ARGV[1]  tag `{prefix}`   ARGV[2]  run id   ARGV[3]  lease token
-- ARGV[4]  step name        ARGV[5]  encoded step state (JSON, starting {"seq":0,)
-- ARGV[6]  lease ms
-- ARGV[7]  '1' when a succeeded record is progress (the execution replayed as
--          many succeeded steps as were recorded before it: Execution.made_progress)
-- Reply: { 1, cancelRequestedAt or '' } | { -1 } when the lease is not ours
--        | { -2, why } the run's stepSeq is not an integer: the run was failed
--          as a corrupted record (fail_corrupt), nothing written
-- A step that succeeded is progress: the run's crashCount goes (max_run_crashes
-- counts the crashes since the run last completed a step). A replay returns the
-- succeeded steps without writing them, and runs a failed one again (its record
-- is no progress): a run that kills its worker before a new step succeeds still
-- reaches the cap. So does one whose step names change at each execution (a
-- timestamp in them): its "new" step succeeds before it got past the steps
-- recorded before, and the client does not send ARGV[7] = '1' for it.
local tag = ARGV[1]
local id = ARGV[2]
local run = k_run(tag, id)
local now = now_ms()
local f = redis.call('HMGET', run, 'lease', 'cancelRequestedAt', 'crashCount')
if ARGV[3] == '' or f[1] ~= ARGV[3] then return { -1 } end
-- held as in lease_held (_lib.lua): an expired lease nobody acted on is still ours
if not redis.call('ZSCORE', k_leases(tag), id) then return { -1 } end
-- The record's seq is the run's step counter, kept here: execution order across
-- attempts and hosts, whatever their clocks say. The client encodes seq first as
-- 0; splicing the number in avoids parsing a record that may hold megabytes.
local record = ARGV[5]
-- A step's outcome keeps the seq of its `running` record (written when it
-- started), so steps stay in the order they started.
local prev = redis.call('HGET', KEYS[1], ARGV[4])
local seq = prev and string.match(prev, '^{"seq":(%d+),"status":"running"')
if not seq then
  -- pcall: a stepSeq that is not an integer (a hand edit, another program) made
  -- this call raise a raw Lua error at every write, an attempt lost each time.
  seq = redis.pcall('HINCRBY', run, 'stepSeq', 1)
  if failed(seq) then
    local why = 'field stepSeq is not an integer'
    claim_faults().fail_corrupt(tag, id, why, now)
    return { -2, why }
  end
end
if string.sub(record, 1, 9) == '{"seq":0,' then
  record = '{"seq":' .. seq .. ',' .. string.sub(record, 10)
end
redis.call('HSET', KEYS[1], ARGV[4], record)
count_step_bytes(run, ARGV[4], prev, record)
if f[3] and ARGV[7] == '1' and string.find(record, '^{"seq":%d+,"status":"succeeded"') then
  redis.call('HDEL', run, 'crashCount')
end
redis.call('ZADD', k_leases(tag), 'XX', int_str(now + tonumber(ARGV[6])), id)
return { 1, f[2] or '' }
