-- Extend the lifetime of a session, and of nothing else.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live, in milliseconds
--
-- Returns 1 when the session's expiry was extended, 0 when the key does not
-- exist, is not a string, or holds a redirect, whose grace period must not
-- grow. Only short documents can be redirects, so a session is never read
-- here: a string that is not a session is found by the next load or write.
--
-- uses: redirect_target

if redis.call("TYPE", KEYS[1])["ok"] ~= "string" then
  return 0
end
if redis.call("STRLEN", KEYS[1]) < 512 and redirect_target(redis.call("GET", KEYS[1])) then
  return 0
end
return redis.call("PEXPIRE", KEYS[1], ARGV[1])
