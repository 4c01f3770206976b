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

if redis.call("TYPE", KEYS[1])["ok"] ~= "string" then
  return 0
end
if redis.call("STRLEN", KEYS[1]) < 512 and redirect_target(redis.call("GET", KEYS[1])) then
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
