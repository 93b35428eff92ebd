-- consume_event: step.wait_for_event for the lease holder: take the first
-- pending event of a name and record it as the step's output, in one script,
-- so an event is consumed exactly once and a replay returns the recorded payload.
--
-- KEYS[1]  run:<id>:steps
-- ARGV[1]  tag   ARGV[2]  run id   ARGV[3]  lease token   ARGV[4]  step name
-- ARGV[5]  event name
-- ARGV[6]  the step record up to its output: '{"seq":0,...,"outputJson":'
--          (the payload is spliced in as a JSON string, then ARGV[7], '}')
-- ARGV[7]  the record's end   ARGV[8]  lease ms
-- ARGV[9]  '1' when the consumed event is progress (clears crashCount, as in
--          write_step.lua)
-- Reply: { 1, payload, record } consumed and recorded | { 0 } none pending
--        | { -1 } the lease is not ours
--        | { -2, why } the run's stepSeq is not an integer: the run was failed
--          as a corrupted record (fail_corrupt), the event left where it was
-- Resend-safe: when the step already has a succeeded record (this call's reply
-- was lost), that record is returned as { 2, '', record } and nothing is consumed.
local tag = ARGV[1]
local id = ARGV[2]
local now = now_ms()
if not lease_held(tag, id, ARGV[3], now) then return { -1 } end
-- (the steps hash of another type: refused naming it before any write; the
-- HSET of the record below, after the LPOP, cannot fail then)
local existing = call_on(KEYS[1], 'HGET', KEYS[1], ARGV[4])
-- A succeeded record as this script writes it (seq, then status, first): any
-- record holding the words, a neighbour's garbage with no seq say, made every
-- execution fail on decoding it, while a step.run treats an unreadable record as
-- absent; such a record is overwritten here like a `waiting` one.
if existing and string.find(existing, '^{"seq":%d+,"status":"succeeded"') then
  return { 2, '', existing }
end
local list = k_ev(tag, id, ARGV[5])
-- of another type: refused naming the key, nothing written (see suspend_run.lua)
local len = redis.pcall('LLEN', list)
if failed(len) then refuse(list, len) end
if len == 0 then return { 0 } end
local run = k_run(tag, id)
-- The step's sequence number before the pop: a failure there leaves the event.
local seq = redis.pcall('HINCRBY', run, 'stepSeq', 1)
if failed(seq) then  -- (see write_step.lua)
  local why = 'field stepSeq is not an integer'
  claim_faults().fail_corrupt(tag, id, why, now)
  return { -2, why }
end
local payload = redis.call('LPOP', list)
-- Written, not incremented: HINCRBY on a field that is not a number would fail
-- the call after the LPOP, and the event would be lost.
local counts = redis.call('HMGET', run, 'eventsPending', 'eventBytes', 'crashCount')
local left = (finite(counts[1]) or 1) - 1
if left < 0 then left = 0 end
-- its bytes leave the budget (send_event.lua); never below 0 (events sent
-- before eventBytes existed)
local bytes = (finite(counts[2]) or 0) - #payload
if bytes < 0 then bytes = 0 end
redis.call('HSET', run, 'eventsPending', int_str(left), 'eventBytes', int_str(bytes))
-- the wait step ended: progress, as a step's end in write_step.lua (crashCount)
if counts[3] and ARGV[9] == '1' then redis.call('HDEL', run, 'crashCount') end
local head = ARGV[6]
if string.sub(head, 1, 9) == '{"seq":0,' then
  head = '{"seq":' .. seq .. ',' .. string.sub(head, 10)
end
local record = head .. cjson.encode(payload) .. ARGV[7]
redis.call('HSET', KEYS[1], ARGV[4], record)
count_step_bytes(run, ARGV[4], existing, record)
redis.call('ZADD', k_leases(tag), 'XX', int_str(now + tonumber(ARGV[8])), id)
return { 1, payload, record }
