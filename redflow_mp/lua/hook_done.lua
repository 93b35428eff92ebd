-- hook_done: an `on_failure` hook returned (or raised); its entry in
-- `on-failure-due` is removed, unless the run failed again since (resumed while
-- the hook ran, then failed with another token: that failure's entry stays for
-- its own hook, whose process may die).
--
-- KEYS[1]  on-failure-due   KEYS[2]  run:<id>
-- ARGV[1]  run id   ARGV[2]  the token of the failure whose hook returned
--          ('': any; an older caller)
-- Reply: 1 when removed, 0 when kept or none
-- Invariants: a run gone, or a record of another type, leaves nothing due.
local token = ARGV[2]
if token ~= '' then
  local last = redis.pcall('HGET', KEYS[2], 'doneToken')
  if not failed(last) and last and last ~= token then
    local status = redis.pcall('HGET', KEYS[2], 'status')
    if status == 'failed' then return 0 end
  end
end
local r = redis.pcall('ZREM', KEYS[1], ARGV[1])
if failed(r) then return redis.error_reply(r.err) end
return r
