-- Extend the lifetime of a session, and of nothing else.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live, in milliseconds
--
-- Returns 1 when the session's expiry was extended, 0 when the key does not
-- exist or holds a redirect, whose grace period must not grow. Only short
-- documents can be redirects, so a session is never read here.

if redis.call("STRLEN", KEYS[1]) < 512 then
  local raw = redis.call("GET", KEYS[1])
  if not raw or redirect_target(raw) then
    return 0
  end
end
return redis.call("PEXPIRE", KEYS[1], ARGV[1])
