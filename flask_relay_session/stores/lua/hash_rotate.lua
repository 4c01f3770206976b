-- Turn a session hash into a redirect to its new id, unless it changed since
-- it was copied there.
--
-- KEYS[1]  the old session key, <prefix>{<old sid>}
-- KEYS[2]  the old lock key, <prefix><lock_prefix>{<old sid>}
-- ARGV[1]  the caller's lock token, or "" when it holds no lock
-- ARGV[2]  the " version" of the session the new one was copied from
-- ARGV[3]  the new session id
-- ARGV[4]  how long the redirect lives (the grace period), in milliseconds;
--          0 ends the old id at once, leaving a tombstone (see rotate.lua)
--
-- The redirect is a hash of two fields: " redirect", the new id, and
-- " expires", when its grace period ends by the server's clock (see
-- `redirect_document` in common.lua for why it carries its end).
--
-- Returns {"locked"}, {"lock_lost"}, {"missing"}, {"redirected", sid},
-- {"foreign", what} when the key is no session hash any more (see
-- `hash_state` in hash_common.lua), {"changed", {field, value, ...}} when a
-- concurrent write changed the session since it was copied (copy it again
-- and retry; the copy checks every field), or {"done"}.
--
-- uses: lock_refusal, RESEND_WINDOW, server_now, grace_over, EXPIRES
-- uses: VERSION, REDIRECT, hash_state

local refusal = lock_refusal(KEYS[2], ARGV[1])
if refusal then
  return refusal
end

local state, found = hash_state(KEYS[1])
if state == "none" then
  return {"missing"}
elseif state == "foreign" then
  return {"foreign", found.what}
elseif state == "redirect" and found.target == ARGV[3] then
  return {"redirected", found.target}
elseif state == "redirect" and grace_over(found.expires) then
  redis.call("DEL", KEYS[1])
  return {"missing"}
elseif state == "redirect" then
  return {"redirected", found.target}
end
if (redis.call("HGET", KEYS[1], VERSION) or "") ~= ARGV[2] then
  return {"changed", redis.call("HGETALL", KEYS[1])}
end

redis.call("DEL", KEYS[1])
local grace = tonumber(ARGV[4])
redis.call("HSET", KEYS[1], REDIRECT, ARGV[3], EXPIRES, server_now() + grace)
redis.call("PEXPIRE", KEYS[1], grace > 0 and grace or RESEND_WINDOW)
return {"done"}
