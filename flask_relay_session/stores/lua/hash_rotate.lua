-- Turn a session hash into a redirect to its new id, unless it changed since
-- it was copied there.
--
-- KEYS[1]  the old session key, <prefix>{<old sid>}
-- KEYS[2]  the old lock key, <prefix><lock_prefix>{<old sid>}
-- ARGV[1]  the caller's lock token, or "" when it holds no lock
-- ARGV[2]  the " version" of the session the new one was copied from
-- ARGV[3]  the new session id
-- ARGV[4]  how long the redirect lives (the grace period), in milliseconds;
--          0 deletes the old id instead
--
-- The redirect is a hash of two fields: " redirect", the new id, and
-- " expires", when its grace period ends by the server's clock (see
-- `redirect_document` in common.lua for why it carries its end).
--
-- Returns {"locked"}, {"lock_lost"}, {"missing"}, {"redirected", sid},
-- {"changed", {field, value, ...}} when a concurrent write changed the
-- session since it was copied (copy it again and retry), or {"done"}.

local refusal = lock_refusal(KEYS[2], ARGV[1])
if refusal then
  return refusal
end

if redis.call("EXISTS", KEYS[1]) == 0 then
  return {"missing"}
end
local target = redis.call("HGET", KEYS[1], REDIRECT)
if target and grace_over(tonumber(redis.call("HGET", KEYS[1], EXPIRES))) then
  redis.call("DEL", KEYS[1])
  return {"missing"}
elseif target then
  return {"redirected", target}
end
if (redis.call("HGET", KEYS[1], VERSION) or "") ~= ARGV[2] then
  return {"changed", redis.call("HGETALL", KEYS[1])}
end

redis.call("DEL", KEYS[1])
local grace = tonumber(ARGV[4])
if grace > 0 then
  redis.call("HSET", KEYS[1], REDIRECT, ARGV[3], EXPIRES, server_now() + grace)
  redis.call("PEXPIRE", KEYS[1], grace)
end
return {"done"}
