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
  local target = redirect_target(raw)
  if target then
    return {"redirected", target}
  end
  return {"changed", raw}
end

if tonumber(ARGV[4]) > 0 then
  redis.call("SET", KEYS[1], redirect_document(ARGV[3]), "PX", ARGV[4])
else
  redis.call("DEL", KEYS[1])
end
return {"done"}
