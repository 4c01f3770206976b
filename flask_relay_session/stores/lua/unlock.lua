-- Release a session lock only if the caller's token still holds it.
--
-- KEYS[1]  the lock key, <prefix><lock_prefix>{<sid>}
-- ARGV[1]  the caller's token
--
-- Returns 1 when the lock was released, 0 when the caller no longer held it.

if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
