-- Load one session hash, refreshing its expiry in the same step.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  the new time to live in milliseconds, or "" to keep the expiry
--
-- Returns false when the key does not exist, {"redirect", sid} when the id
-- was rotated away, else {"found", {field, value, ...}, ttl_ms}: every
-- field as stored, meta fields included. Nothing is decoded here.

local target = redis.call("HGET", KEYS[1], REDIRECT)
if target then
  return {"redirect", target}
end

local fields = redis.call("HGETALL", KEYS[1])
if #fields == 0 then
  return false
end

local ttl
if ARGV[1] ~= "" then
  ttl = tonumber(ARGV[1])
  redis.call("PEXPIRE", KEYS[1], ttl)
else
  ttl = redis.call("PTTL", KEYS[1])
end
return {"found", fields, ttl}
