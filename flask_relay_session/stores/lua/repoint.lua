-- Point a redirect straight at the end of its chain, keeping its expiry.
--
-- KEYS[1]  the key of a rotated-away session, <prefix>{<sid>}
-- ARGV[1]  the id at the end of the chain
--
-- Returns 1 when the redirect was shortened, 0 when the key is no longer a
-- redirect (it expired, or was never one).
--
-- uses: read_key, redirect_target, redirect_document

local raw = read_key("GET", KEYS[1])
if not raw then
  return 0
end
local target, expires = redirect_target(raw)
local ttl = redis.call("PTTL", KEYS[1])
if not target or ttl <= 0 then
  return 0
end
redis.call("SET", KEYS[1], redirect_document(ARGV[1], expires), "PX", ttl)
if expires then
  redis.call("PEXPIREAT", KEYS[1], expires)
end
return 1
