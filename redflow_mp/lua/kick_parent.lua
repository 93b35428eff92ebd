-- kick_parent: shards > 1, a run finished whose parent lives in another shard.
-- Sent by the finisher to the parent's shard right after the finish (a script
-- cannot touch both shards): records the finish and wakes the parent exactly as
-- an in-shard finish does (notify_waiters in _lib.lua).
--
-- KEYS[1]  run:<parent>
-- ARGV[1]  tag (the parent's shard)   ARGV[2]  parent run id   ARGV[3]  child run id
-- ARGV[4]  the child's terminal status (succeeded | failed | canceled)
-- Reply: 1 the parent was woken | 0 not (unknown, not suspended, or still waiting
--        for other children)
-- The finish is recorded in run:<parent>:kicked (child -> status) whatever the
-- parent's state, so a suspend that comes after the kick sees it
-- (suspend_run.lua, await_children.lua); the key goes with the run (sweep_runs.lua). Resend-safe.
local tag = ARGV[1]
local parent = ARGV[2]
local child = ARGV[3]
local status = ARGV[4]
if not TERMINAL[status] then return redis.error_reply('ERR kick_parent: bad status') end
local run = KEYS[1]
if redis.call('EXISTS', run) == 0 then return 0 end
redis.call('HSET', k_kicked(tag, parent), child, status)
-- (an awaited set of another type: the parent wakes and reads its children).
-- A parent not suspended is not woken (wake in _lib.lua); one registering its
-- wait a page at a time (await_children.lua) loses the child from its awaited
-- set here, and is marked when it did not succeed: its final suspend reads both.
if exit_helpers().notify_parent(tag, parent, child, now_ms(), status) then return 1 end
return 0
