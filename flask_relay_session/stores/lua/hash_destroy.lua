-- Delete a session hash, unless the key is a redirect within its grace
-- period: then name the id it leads to, and leave it in place.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  optional: a user; then only a session bound to that user is
--          deleted
--
-- As destroy.lua, whose comment says why a redirect is left to the caller.
-- What is a redirect is told by `hash_state` in hash_common.lua; anything
-- else, a key that holds no session included, is deleted, but with
-- ARGV[1].
--
-- Returns {"redirected", sid} for a redirect within its grace period,
-- {"kept"} when ARGV[1] is given and the key holds no session bound to that
-- user, or {"deleted", user} once the key is gone (it may never have
-- existed), with the user the session was bound to ("" for none).
--
-- uses: grace_over, hash_state

local state, found = hash_state(KEYS[1])
if state == "redirect" and not grace_over(found.expires) then
  return {"redirected", found.target}
end
local user = state == "session" and found.user or ""
if ARGV[1] and (state == "foreign" or state == "session" and user ~= ARGV[1]) then
  return {"kept"}
end
redis.call("DEL", KEYS[1])
return {"deleted", user}
