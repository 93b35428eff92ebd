-- confirm_result: a write for a durable client's WAIT/WAITAOF to follow before a
-- run's outcome is handed to a caller (result()): replication keeps the order of
-- writes, so once a replica has this one it has the finish read before it. A
-- finish is published as soon as the master applied it, before its worker's
-- WAIT confirmed it; an outcome a failover could still undo is not returned.
--
-- KEYS[1]  result-confirm (a string: the server time of the last confirm)
-- ARGV[1]  tag `{prefix}`
-- Reply: 1
redis.call('SET', KEYS[1], ms(now_ms()), 'PX', 60000)
return 1
