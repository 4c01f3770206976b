-- Point a redirect straight at the end of its chain, keeping its expiry.
--
-- KEYS[1]  the key of a rotated-away session, <prefix>{<sid>}
-- ARGV[1]  the id at the end of the chain
--
-- Returns 1 when the redirect was shortened, 0 when the key is no longer a
-- redirect (it expired, or was never one).
--
-- uses: REDIRECT, hash_state

local state, found = hash_state(KEYS[1])
if state ~= "redirect" then
  return 0
end
-- HSET keeps the key's TTL and " expires": the redirect still ends with
-- its grace period.
redis.call("HSET", KEYS[1], REDIRECT, ARGV[1])
if found.expires then
  redis.call("PEXPIREAT", KEYS[1], found.expires)
end
return 1
