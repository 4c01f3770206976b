-- Delete a session, unless the key is a redirect within its grace period:
-- then name the id it leads to, and leave it in place.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
--
-- The id a redirect leads to is in another cluster slot, out of this
-- script's reach: the caller deletes the session there first (following the
-- chain with this script), then the redirect, so that no redirect is gone
-- while the session it leads to lives. A redirect past its grace period
-- leads nowhere (see `grace_over` in common.lua): it is deleted like a
-- session, and so is a key that holds no session at all. Only short
-- documents can be redirects, so a session is never read here.
--
-- Returns {"redirected", sid} for a redirect within its grace period, or
-- {"deleted"} once the key is gone (it may never have existed).
--
-- uses: read_key, redirect_target, grace_over

-- STRLEN counts a missing key as empty: no redirect either.
local length = read_key("STRLEN", KEYS[1])
if length and length > 0 and length < 512 then
  local target, expires = redirect_target(redis.call("GET", KEYS[1]))
  if target and not grace_over(expires) then
    return {"redirected", target}
  end
end
redis.call("DEL", KEYS[1])
return {"deleted"}
