-- Record who a session belongs to, and nothing else: bind it to a user,
-- unbind it, or record that its user was seen.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- ARGV[1]  now, in milliseconds since the epoch
-- ARGV[2]  the mode: "bind", "seen" or "unbind"
-- ARGV[3]  the user, ARGV[4] when it was seen, ARGV[5] its user agent and
--          ARGV[6] its address ("" for none); see `record_user` in
--          common.lua
--
-- The session's data is not changed, nor decoded: only its meta data,
-- which the document ends with (see `split_meta` in common.lua). So the
-- lock is not checked either. The caller keeps the user's registry (see
-- stores/users.py).
--
-- Returns {"missing"}, {"redirected", sid}, {"foreign", what} (see
-- merge.lua), or {"done", created_ms, expires_ms, previous user or ""}.
--
-- uses: json, redirect_target, grace_over, is_meta_number, split_meta
-- uses: record_user

local kind = redis.call("TYPE", KEYS[1])["ok"]
if kind == "none" then
  return {"missing"}
elseif kind ~= "string" then
  return {"foreign", "a Redis " .. kind .. ", not a string"}
end
local raw = redis.call("GET", KEYS[1])
local target, expires = redirect_target(raw)
if target and not grace_over(expires) then
  return {"redirected", target}
elseif target then
  redis.call("DEL", KEYS[1])
  return {"missing"}
end
local head, meta = split_meta(raw)
if not head or string.sub(head, 1, 8) ~= '{"data":'
  or not is_meta_number(meta.createdAt) then
  return {"foreign", "a document without an integer meta.createdAt"}
end
local ttl = redis.call("PTTL", KEYS[1])
if ttl < 0 then
  return {"missing"}
end
local now = tonumber(ARGV[1])
local previous, changed = record_user(meta, 2)
if changed then
  meta.expiresAt = now + ttl
  redis.call("SET", KEYS[1], head .. json.encode(meta) .. "}", "PX", ttl)
end
return {"done", meta.createdAt, now + ttl, previous}
