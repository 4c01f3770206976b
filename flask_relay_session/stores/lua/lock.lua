-- Take a session lock: SET <lock key> <token> NX PX <ttl>.
--
-- KEYS[1]  the lock key, <prefix><lock_prefix>{<sid>}
-- ARGV[1]  the caller's token
-- ARGV[2]  the lock's time to live, in milliseconds
--
-- Returns 1 when the caller holds the lock, 0 when another token does. A
-- caller that re-sent this script after a lost reply finds its own token and
-- holds the lock, instead of waiting for it to expire.

if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return 1
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return 1
end
return 0
