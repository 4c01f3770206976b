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

-- STRLEN fails on a key that is not a string, which is left alone, and
-- counts a missing key as empty: no redirect, and PEXPIRE finds nothing to
-- extend. A failure other than WRONGTYPE is raised, as by `read_key` in
-- common.lua, written out here: a touch has no use for the key's type.
local length = redis.pcall("STRLEN", KEYS[1])
if type(length) == "table" then
  if not string.find(length.err, "WRONGTYPE", 1, true) then
    redis.call("STRLEN", KEYS[1])
  end
  return 0
end
if length > 0 and length < 512 and redirect_target(redis.call("GET", KEYS[1])) then
  return 0
end
return redis.call("PEXPIRE", KEYS[1], ARGV[1])
