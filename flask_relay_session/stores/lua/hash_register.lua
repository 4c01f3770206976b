-- Record who a session hash belongs to, and nothing else: bind it to a
-- user, unbind it, or record that its user was seen.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV     as for register.lua
--
-- Only meta fields are written (see `hash_record_user` in
-- hash_common.lua), so the lock is not checked; the version is bumped, so
-- that a rotation copying the session meanwhile copies it again.
--
-- Returns {"missing"}, {"redirected", sid}, {"foreign", what} (see
-- `hash_state` in hash_common.lua), or {"done", created_ms, expires_ms,
-- previous user or ""}.
--
-- uses: grace_over, EXPIRES, VERSION, hash_state, hash_record_user

local state, found = hash_state(KEYS[1])
if state == "none" then
  return {"missing"}
elseif state == "foreign" then
  return {"foreign", found.what}
elseif state == "redirect" and not grace_over(found.expires) then
  return {"redirected", found.target}
elseif state == "redirect" then
  redis.call("DEL", KEYS[1])
  return {"missing"}
end
local ttl = redis.call("PTTL", KEYS[1])
if ttl < 0 then
  return {"missing"}
end
local now = tonumber(ARGV[1])
local previous, changed = hash_record_user(KEYS[1], 2)
if changed then
  redis.call("HSET", KEYS[1], EXPIRES, now + ttl)
  redis.call("HINCRBY", KEYS[1], VERSION, 1)
end
return {"done", found.created, now + ttl, previous}
