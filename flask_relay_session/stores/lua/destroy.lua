-- Delete a session, unless the key is a redirect within its grace period:
-- then name the id it leads to, and leave it in place.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  optional: a user; then only a session bound to that user is
--          deleted (a revocation, see stores/users.py)
--
-- The id a redirect leads to is in another cluster slot, out of this
-- script's reach: the caller deletes the session there first (following the
-- chain with this script), then the redirect, so that no redirect is gone
-- while the session it leads to lives. A redirect past its grace period
-- leads nowhere (see `grace_over` in common.lua): it is deleted like a
-- session, and so is a key that holds no session at all, but with ARGV[1].
-- Only short documents can be redirects, and only the end of a session,
-- its meta data, is read (see `split_meta` in common.lua).
--
-- Returns {"redirected", sid} for a redirect within its grace period,
-- {"kept"} when ARGV[1] is given and the key holds no session bound to that
-- user, or {"deleted", user} once the key is gone (it may never have
-- existed), with the user the session was bound to ("" for none).
--
-- uses: redirect_target, grace_over, split_meta

local owner = ARGV[1]
local kind = redis.call("TYPE", KEYS[1])["ok"]
-- "none", "session", "gone" (a redirect past its grace period) or "foreign"
local state, user = "none", ""
if kind == "string" then
  state = "session"
  if redis.call("STRLEN", KEYS[1]) < 512 then
    local target, expires = redirect_target(redis.call("GET", KEYS[1]))
    if target and not grace_over(expires) then
      return {"redirected", target}
    elseif target then
      state = "gone"
    end
  end
  if state == "session" then
    local _, meta = split_meta(redis.call("GETRANGE", KEYS[1], -8192, -1))
    if not meta then
      state = "foreign"
    elseif type(meta.user) == "string" then
      user = meta.user
    end
  end
elseif kind ~= "none" then
  state = "foreign"
end
if owner and (state == "foreign" or state == "session" and user ~= owner) then
  return {"kept"}
end
redis.call("DEL", KEYS[1])
return {"deleted", user}
