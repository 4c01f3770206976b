-- Load one session document, refreshing its expiry in the same step.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live in milliseconds, or "" to keep the expiry
--
-- Returns false when the key does not exist, {"redirect", sid} when the id
-- was rotated away, else {"found", document, ttl_ms}.
-- The document is returned as stored: decoding it here would block Redis
-- for about 15 microseconds per kilobyte for nothing.

local raw = redis.call("GET", KEYS[1])
if not raw then
  return false
end

local target = redirect_target(raw)
if target then
  return {"redirect", target}
end

local ttl
if ARGV[1] ~= "" then
  ttl = tonumber(ARGV[1])
  redis.call("PEXPIRE", KEYS[1], ttl)
else
  ttl = redis.call("PTTL", KEYS[1])
end
return {"found", raw, ttl}
