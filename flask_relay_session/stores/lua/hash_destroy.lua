-- Delete a session hash, unless the key is a redirect within its grace
-- period: then name the id it leads to, and leave it in place.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
--
-- As destroy.lua, whose comment says why a redirect is left to the caller.
-- What is a redirect is told by `hash_state` in hash_common.lua; anything
-- else, a key that holds no session included, is deleted.
--
-- Returns {"redirected", sid} for a redirect within its grace period, or
-- {"deleted"} once the key is gone (it may never have existed).
--
-- uses: grace_over, hash_state

local state, found = hash_state(KEYS[1])
if state == "redirect" and not grace_over(found.expires) then
  return {"redirected", found.target}
end
redis.call("DEL", KEYS[1])
return {"deleted"}
