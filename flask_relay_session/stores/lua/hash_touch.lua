-- Extend the lifetime of a session hash, and of nothing else.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live, in milliseconds
--
-- Returns 1 when the session's expiry was extended, 0 when the key does not
-- exist, holds a redirect, whose grace period must not grow, or holds
-- something that is not a session (see `hash_state` in hash_common.lua).
--
-- uses: hash_state

if hash_state(KEYS[1]) ~= "session" then
  return 0
end
return redis.call("PEXPIRE", KEYS[1], ARGV[1])
