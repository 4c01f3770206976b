-- Extend the lifetime of a session hash, and of nothing else.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live, in milliseconds
--
-- Returns 0 when the key does not exist, holds a redirect, whose grace
-- period must not grow, or holds something that is not a session (see
-- `hash_state` in hash_common.lua); else {1, user, seen_ms} once the
-- expiry was extended, as touch.lua does.
--
-- uses: SEEN, meta_number, hash_state

local state, found = hash_state(KEYS[1])
if state ~= "session" then
  return 0
end
redis.call("PEXPIRE", KEYS[1], ARGV[1])
if found.user then
  return {1, found.user, meta_number(redis.call("HGET", KEYS[1], SEEN)) or 0}
end
return {1, "", 0}
