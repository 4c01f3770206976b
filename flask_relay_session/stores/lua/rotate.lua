-- Turn a session into a redirect to its new id, unless it changed since it
-- was copied there.
--
-- KEYS[1]  the old session key, <prefix>{<old sid>}
-- KEYS[2]  the old lock key, <prefix><lock_prefix>{<old sid>}
-- ARGV[1]  the caller's lock token, or "" when it holds no lock
-- ARGV[2]  the SHA1 of the document the new session was copied from
-- ARGV[3]  the new session id
-- ARGV[4]  how long the redirect lives (the grace period), in milliseconds;
--          0 ends the old id at once
--
-- The redirect records when its grace period ends, by the server's clock
-- (see `redirect_document` in common.lua). Without a grace period the old id
-- becomes a tombstone: a redirect whose grace period is already over, which
-- everything treats as gone, kept for RESEND_WINDOW so that this script,
-- re-sent after a lost reply, finds its own rotation done instead of a
-- missing session. A redirect to ARGV[3] is always this rotation's own.
--
-- Returns {"locked"}, {"lock_lost"}, {"missing"}, {"redirected", sid},
-- {"foreign", what} when the key is not a string any more (see merge.lua),
-- {"changed", document} when a concurrent write changed the document since
-- it was copied (copy it again and retry; the copy checks that it is a
-- session), or {"done"}.
--
-- uses: lock_refusal, read_key, RESEND_WINDOW, redirect_target
-- uses: redirect_document, grace_over, server_now

local refusal = lock_refusal(KEYS[2], ARGV[1])
if refusal then
  return refusal
end

local raw, kind = read_key("GET", KEYS[1])
if kind then
  return {"foreign", "a Redis " .. kind .. ", not a string"}
elseif not raw then
  return {"missing"}
end
if redis.sha1hex(raw) ~= ARGV[2] then
  local target, expires = redirect_target(raw)
  if target == ARGV[3] then
    return {"redirected", target}
  elseif target and grace_over(expires) then
    redis.call("DEL", KEYS[1])
    return {"missing"}
  elseif target then
    return {"redirected", target}
  end
  return {"changed", raw}
end

local grace = tonumber(ARGV[4])
local lasts = grace > 0 and grace or RESEND_WINDOW
local document = redirect_document(ARGV[3], server_now() + grace)
redis.call("SET", KEYS[1], document, "PX", lasts)
return {"done"}
