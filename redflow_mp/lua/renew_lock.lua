-- renew_lock: extend a lock (the cron leader lock) only while the token holds it.
--
-- KEYS[1]  the lock key   ARGV[1]  tag (unused)   ARGV[2]  token   ARGV[3]  ttl ms
-- Reply: 1 renewed | 0 not ours
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
