-- Extend the lifetime of a session, and of nothing else.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live, in milliseconds
--
-- Returns 0 when the key does not exist, is not a string, or holds a
-- redirect, whose grace period must not grow; else {1, user, seen_ms}
-- once the expiry was extended, with the user the session is bound to (""
-- for none) and when it was last seen (see `record_user` in common.lua),
-- so that the caller records a visit when one is due. Only short documents
-- can be redirects, and only the end of a session, its meta data, is read
-- (see `split_meta` in common.lua): a string that is not a session is
-- found by the next load or write.
--
-- uses: redirect_target, is_meta_number, split_meta

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
if redis.call("PEXPIRE", KEYS[1], ARGV[1]) == 0 then
  return 0
end
local _, meta = split_meta(redis.call("GETRANGE", KEYS[1], -8192, -1))
if meta and type(meta.user) == "string" then
  return {1, meta.user, is_meta_number(meta.seen) and meta.seen or 0}
end
return {1, "", 0}
