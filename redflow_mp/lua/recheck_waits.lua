-- recheck_waits: suspended runs that a key Redis lost (evicted under an
-- evicting maxmemory-policy, or deleted) would leave asleep for good. For each
-- run given, from its `wait` field:
--   * its awaited children (those in this shard): one without a record (lost),
--     failed or canceled, or all of them finished, means its condition holds:
--     a child's finish wakes its parent in the finish's own script, so a run
--     still suspended then lost its wake-up (its `run:<id>:awaits` set, or the
--     child, is gone): it is woken (`wake`), as the finish would have;
--   * else its wake-up time (a sleep's end, a wait's deadline) is put back into
--     `timers` when that has no entry for it (the key lost): suspend_run writes
--     both in one call and wake_timers removes the entry as it wakes the run.
-- Children in other shards are left to kick_parent.lua (lostkeys.py).
-- A paged wait (`childrenAwaited`, no `children` listed: wait_scripts.py) is
-- judged on its run:<id>:awaits set instead: gone, the condition holds; else a
-- sample of CHILDREN_CAP of its members is read as above.
--
-- KEYS[1]  timers (ZSET runId -> wake-up time ms)
-- ARGV[1]  tag   ARGV[2 ..] run ids (a page of runs:status:suspended)
-- Reply: { { run id re-armed, ... }, { run id woken, ... }, ids looked at }
--        (the first `ids looked at` of those given; the caller sends the rest
--        again: see WAIT_BYTES)
-- Cost: one HMGET and one ZSCORE per id looked at, and one HGET per awaited
-- child read: all of a run's children up to CHILDREN_CAP; past that (a fan-out) a
-- window of CHILDREN_CAP of them that moves with the clock, which can find a
-- lost or failed child but not conclude that all finished; at most
-- CHILD_READS in all per call (a page of parents of 5,000 children each must
-- not hold Redis for seconds); and the decoding of each run's `wait` field,
-- which names every awaited child (about 30 bytes each): at most WAIT_BYTES of
-- them per call, past the first run (about 25 ms of decoding; a page of 500
-- parents of 5,000 children each decoded 75 MB of JSON in one call, 0.34 s; 40
-- parents of 80,000 children each, 1.3 s).
local CHILDREN_CAP = 50
local CHILD_READS = 5000
local WAIT_BYTES = 1024 * 1024
local tag = ARGV[1]
local now = now_ms()
local reads, bytes, looked = 0, 0, 0
local rearmed, woken = {}, {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local f = redis.pcall('HMGET', k_run(tag, id), 'status', 'wait')
  local ok, wait = false, nil
  if not failed(f) and f[1] == 'suspended' and f[2] then
    bytes = bytes + #f[2]
    if bytes > WAIT_BYTES and looked > 0 then break end  -- this one and the rest: next call
    ok, wait = pcall(cjson.decode, f[2])
  end
  looked = looked + 1
  if ok and type(wait) == 'table' then
    local holds = false
    local children = wait.children
    if type(children) == 'table' and #children > 0 and reads < CHILD_READS then
      local here, open = id_shard(id), 0
      local n = #children
      local window = children
      if n > CHILDREN_CAP then
        window = {}
        local start = now % n
        for j = 0, CHILDREN_CAP - 1 do window[#window + 1] = children[(start + j) % n + 1] end
        open = n - CHILDREN_CAP  -- the others are not read: never "all finished"
      end
      reads = reads + #window
      for _, child in ipairs(window) do
        local status = nil
        if type(child) == 'string' and id_shard(child) == here then
          status = redis.pcall('HGET', k_run(tag, child), 'status')
        end
        if type(child) ~= 'string' or id_shard(child) ~= here or failed(status) then
          open = open + 1  -- not judged here
        elseif not status or status == 'failed' or status == 'canceled' then
          holds = true
        elseif not TERMINAL[status] then
          open = open + 1
        end
      end
      holds = holds or open == 0
    elseif tonumber(wait.childrenAwaited) and reads < CHILD_READS then
      -- a paged wait (its `wait` names no child): run:<id>:awaits holds the
      -- unfinished ones; gone (lost, or emptied by finishes that did not wake
      -- it), the condition holds; else a sample of CHILDREN_CAP of its members
      local awaits = k_awaits(tag, id)
      local sample = redis.pcall('SRANDMEMBER', awaits, CHILDREN_CAP)
      if not failed(sample) then
        if #sample == 0 then holds = true end
        reads = reads + #sample
        local here = id_shard(id)
        for _, child in ipairs(sample) do
          if id_shard(child) == here then
            local status = redis.pcall('HGET', k_run(tag, child), 'status')
            if not failed(status) and (not status or status == 'failed'
                or status == 'canceled') then
              holds = true
            end
          end
        end
      end
    end
    if holds then
      if exit_helpers().wake(tag, id, now) then woken[#woken + 1] = id end
    else
      local at = tonumber(wait.wakeAt)
      if at and redis.pcall('ZSCORE', KEYS[1], id) == false then
        if not failed(redis.pcall('ZADD', KEYS[1], int_str(at), id)) then
          rearmed[#rearmed + 1] = id
        end
      end
    end
  end
end
return { rearmed, woken, looked }
