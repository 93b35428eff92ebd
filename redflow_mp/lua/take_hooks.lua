-- take_hooks: take over `on_failure` hooks left due past their deadline (their
-- caller died, or was killed past the hook limit, before it removed the entry).
--
-- KEYS[1]  on-failure-due
-- ARGV[1]  tag   ARGV[2]  grace ms (the taker's new deadline: now + grace)
-- ARGV[3]  most entries taken   ARGV[4]  most due entries read (>= ARGV[3])
-- ARGV[5]  rank of the first due entry read (the caller's cursor)
-- ARGV[6]  most takeovers of one run's hook
-- ARGV[7..] the workflows whose on_failure the caller runs; none: a probe, which
--          takes nothing and replies { next rank, then the distinct workflows of
--          the due entries read } (the caller names only those it runs: a tick
--          with nothing due sends no name, whatever the workflows it loads)
-- Reply: { next rank (0: the due entries were read to their end), then per hook
--          taken: id, workflow, takeovers so far (the run's `hookTakes`); past
--          ARGV[6] the entry was removed instead (given up: a hook that never
--          returns, killed past the limit each time, is not called forever) }
-- Invariants: an entry taken is scored now + grace in the same call, so a second
-- taker (another supervisor) reads it as not due until that deadline: one taker
-- per deadline. An entry whose run is gone (retention, a delete), is not a hash,
-- or is no longer `failed` (resumed) is removed: no hook is due for it. An entry
-- of a workflow the caller does not run stays for a supervisor that does (the
-- cursor moves past it). Bounded: at most ARGV[4] entries read a call.
local tag = ARGV[1]
local now = now_ms()
local grace = tonumber(ARGV[2])
local take = tonumber(ARGV[3])
local scan = tonumber(ARGV[4])
local rank = tonumber(ARGV[5]) or 0
local most = tonumber(ARGV[6])
local probe = #ARGV < 7
local mine = {}
for i = 7, #ARGV do mine[ARGV[i]] = true end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', rank, scan)
local out = { 0 }
local taken, kept = 0, 0
local named = {}
for _, id in ipairs(due) do
  if taken >= take then break end
  local f = redis.pcall('HMGET', k_run(tag, id), 'status', 'workflow')
  if failed(f) or f[1] ~= 'failed' then
    redis.call('ZREM', KEYS[1], id)
  elseif probe then
    kept = kept + 1
    if f[2] and not named[f[2]] then
      named[f[2]] = true
      out[#out + 1] = f[2]
    end
  elseif mine[f[2]] then
    local takes = redis.pcall('HINCRBY', k_run(tag, id), 'hookTakes', 1)
    if failed(takes) then  -- a count written by hand (not an integer): a new count
      redis.call('HSET', k_run(tag, id), 'hookTakes', 1)
      takes = 1
    end
    if takes > most then
      redis.call('ZREM', KEYS[1], id)
    else
      redis.call('ZADD', KEYS[1], now + grace, id)
    end
    out[#out + 1] = id
    out[#out + 1] = f[2]
    out[#out + 1] = takes
    taken = taken + 1
  else
    kept = kept + 1
  end
end
-- The next call starts past the entries kept here (the others left the range),
-- or at the start once every due entry was read.
if #due < scan and taken < take then out[1] = 0 else out[1] = rank + kept end
return out
