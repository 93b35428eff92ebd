-- release_lock: delete a lock only while the token holds it.
--
-- KEYS[1]  the lock key   ARGV[1]  tag (unused)   ARGV[2]  token
-- Reply: 1 released | 0 not ours
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
