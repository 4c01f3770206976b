-- Extend the lifetime of a session hash, and of nothing else.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live, in milliseconds
--
-- Returns 1 when the session's expiry was extended, 0 when the key does not
-- exist or holds a redirect, whose grace period must not grow.

if redis.call("HEXISTS", KEYS[1], REDIRECT) == 1 then
  return 0
end
return redis.call("PEXPIRE", KEYS[1], ARGV[1])
