-- Turn a session into a redirect to its new id, unless it changed since it
-- was copied there.
--
-- KEYS[1]  the old session key, <prefix>{<old sid>}
-- KEYS[2]  the old lock key, <prefix><lock_prefix>{<old sid>}
-- ARGV[1]  the caller's lock token, or "" when it holds no lock
-- ARGV[2]  the SHA1 of the document the new session was copied from
-- ARGV[3]  the new session id
-- ARGV[4]  how long the redirect lives (the grace period), in milliseconds;
--          0 deletes the old id instead
--
-- The redirect records when its grace period ends, by the server's clock
-- (see `redirect_document` in common.lua).
--
-- Returns {"locked"}, {"lock_lost"}, {"missing"}, {"redirected", sid},
-- {"changed", document} when a concurrent write changed the document since
-- it was copied (copy it again and retry), or {"done"}.

local refusal = lock_refusal(KEYS[2], ARGV[1])
if refusal then
  return refusal
end

local raw = redis.call("GET", KEYS[1])
if not raw then
  return {"missing"}
end
if redis.sha1hex(raw) ~= ARGV[2] then
  local target, expires = redirect_target(raw)
  if target and grace_over(expires) then
    redis.call("DEL", KEYS[1])
    return {"missing"}
  elseif target then
    return {"redirected", target}
  end
  return {"changed", raw}
end

local grace = tonumber(ARGV[4])
if grace > 0 then
  local document = redirect_document(ARGV[3], server_now() + grace)
  redis.call("SET", KEYS[1], document, "PX", grace)
else
  redis.call("DEL", KEYS[1])
end
return {"done"}
