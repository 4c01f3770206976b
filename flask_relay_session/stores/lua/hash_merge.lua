-- Apply changed paths to one session hash, atomically with the lock check.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- KEYS[2]  the lock key, <prefix><lock_prefix>{<sid>}
-- KEYS[3]  only to release the lock (held by ARGV[1]) once the write is
--          done, in this same step: the lock's receipt key,
--          <prefix><lock_prefix>released:{<sid>}
-- ARGV[1]  the caller's lock token, or "" when it holds no lock
-- ARGV[2]  now, in milliseconds since the epoch
-- ARGV[3]  the new time to live in milliseconds, or "" to keep the expiry
-- ARGV[4]  "1" to create the session when it does not exist, else "0"
-- ARGV[5]  the largest the session may become, in bytes (" size", see
--          `session_size` in stores/paths.py)
-- ARGV[6]  the number of changes, then each change as:
--          "s", depth, key 1 .. key depth, value JSON   (set a path)
--          "d", depth, key 1 .. key depth               (delete a path)
--          then, to record who the session belongs to along with the
--          write, five more: mode, user, seen, agent, address (see
--          `record_user` in common.lua)
--
-- Returns {"locked"}, {"lock_lost"}, {"missing"}, {"redirected", sid},
-- {"foreign", what} when the key holds something that is not a session: not
-- a hash, a hash without the meta fields (see `hash_state` in
-- hash_common.lua), or a field this write decodes that is not JSON (`what`
-- says what, in words; the key is left as it is), {"too_large", size} or
-- {"done", created_ms, expires_ms, emptied, user, seen_ms}, the last two the
-- user the session is bound to ("" for none) and when it was last seen (see
-- `hash_record_user` in hash_common.lua).
-- Nothing is written unless the reply is "done".
-- A re-sent script whose first run released the lock gets the first run's
-- reply again (see `finish` in common.lua).
--
-- Redis work follows the fields the paths touch, not the session: a field
-- replaced whole (a path of depth 1) is stored as sent, without cjson; a
-- deeper path decodes and re-encodes its own field only, written as Python
-- writes it (see `encode` in common.lua). The size is kept up to date from
-- the lengths of the touched fields.
--
-- uses: json, lock_refusal, finish, receipt, grace_over, apply_change
-- uses: encode, CREATED, EXPIRES, SIZE, VERSION, hash_state, hash_call
-- uses: USER, SEEN, meta_number, data_field_count, hash_record_user

local key = KEYS[1]
local release = #KEYS == 3
local refusal = lock_refusal(KEYS[2], ARGV[1])
if refusal then
  return release and refusal[1] == "lock_lost" and receipt(KEYS[3], ARGV[1])
    or refusal
end

local state, found = hash_state(key)
if state == "foreign" then
  return {"foreign", found.what}
elseif state == "redirect" then
  if not grace_over(found.expires) then
    return {"redirected", found.target}
  end
  -- A redirect whose grace period is over, kept alive by a load that
  -- refreshed the key while it was rotated: it is gone.
  redis.call("DEL", key)
  state = "none"
end

local now = tonumber(ARGV[2])
local created, size, version = found.created, found.size, found.version
if state == "none" then
  if ARGV[4] ~= "1" then
    return {"missing"}
  end
  created, size, version = now, 0, 0
end

local ttl
if ARGV[3] ~= "" then
  ttl = tonumber(ARGV[3])
else
  ttl = redis.call("PTTL", key)
  if ttl < 0 then
    return {"missing"}
  end
end

local touched = {}  -- the fields the changes touch, in order
local before = {}   -- field -> the length of its stored value, 0 if none
local raw = {}      -- field -> its JSON, to store or to decode, or false: none
local tree = {}     -- field -> its decoded value, for fields in `decoded`
local decoded = {}  -- field -> true when `tree` holds the field's value
local dirty = {}    -- field -> true when the field must be written

-- Note a field the changes touch and its stored length, the first time. A
-- field first touched by a deeper path is read whole, for `decode`: its
-- length comes with it.
local function touch(field, deep)
  if before[field] ~= nil then
    return
  end
  touched[#touched + 1] = field
  if deep then
    local stored = redis.call("HGET", key, field)
    before[field] = stored and #stored or 0
    raw[field] = stored
  else
    before[field] = redis.call("HSTRLEN", key, field)
  end
end

-- Decode a field into `tree`; returns false when it is not JSON.
local function decode(field)
  if decoded[field] then
    return true
  end
  local stored = raw[field]
  if stored then
    local ok, value = pcall(json.decode, stored)
    if not ok then
      return false
    end
    tree[field] = value
  end
  raw[field] = nil
  decoded[field] = true
  return true
end

local index = 7
for _ = 1, tonumber(ARGV[6]) do
  local op = ARGV[index]
  local depth = tonumber(ARGV[index + 1])
  local first = index + 2
  local last = first + depth - 1
  local field = ARGV[first]
  touch(field, depth > 1)
  if depth == 1 then
    raw[field] = op == "s" and ARGV[last + 1]
    tree[field] = nil
    decoded[field] = nil
    dirty[field] = true
  else
    if not decode(field) then
      return {"foreign", "a hash whose field is not JSON"}
    end
    if apply_change(tree, op, first, last) then
      dirty[field] = true
    end
  end
  index = op == "s" and last + 2 or last + 1
end

-- What to store for a touched field: its JSON, false to delete it, or nil
-- to leave it as it is.
local function result(field)
  if not dirty[field] then
    return nil
  elseif not decoded[field] then
    return raw[field]
  elseif tree[field] == nil then
    return false
  end
  return encode(tree[field])
end

-- One HSET writes the fields and the meta fields, the version bumped from
-- what hash_state read, which also read the owner the reply gives: each
-- command a script runs costs more than the Lua around it (see the probes
-- of benchmarks/lua_cost.py). Of the meta fields, it writes only those that
-- change: each field HSET sets is looked up in the hash and may move the
-- rest of it. Once a data field is written (a name that is no meta field's:
-- not a space and a letter, see hash_common.lua), the hash holds data: only
-- a write that writes none counts its data fields.
local writes = {}   -- field, value, field, value, ... for HSET
local deleted = {}  -- the fields to delete
local holds_data = false
for _, field in ipairs(touched) do
  local value = result(field)
  if value ~= nil and before[field] > 0 then
    size = size - #field - before[field]
  end
  if value then
    size = size + #field + #value
    writes[#writes + 1] = field
    writes[#writes + 1] = value
    holds_data = holds_data or string.sub(field, 1, 1) ~= " "
      or string.sub(field, 2, 2) == " " or string.sub(field, 2, 2) == "~"
  elseif value == false then
    deleted[#deleted + 1] = field
  end
end
if size > tonumber(ARGV[5]) then
  return {"too_large", size}
end

if #deleted > 0 then
  hash_call("HDEL", key, deleted)
end
local count = #writes
if state == "none" then
  writes[count + 1], writes[count + 2] = CREATED, created
  count = count + 2
end
if size ~= found.size then
  writes[count + 1], writes[count + 2] = SIZE, size
  count = count + 2
end
writes[count + 1], writes[count + 2] = EXPIRES, now + ttl
writes[count + 3], writes[count + 4] = VERSION, version + 1
hash_call("HSET", key, writes)
local user, seen = found.user, found.seen
if ARGV[index] then
  hash_record_user(key, index)
  user, seen = unpack(redis.call("HMGET", key, USER, SEEN))
end
if not holds_data and data_field_count(key) == 0 then
  redis.call("DEL", key)
  return finish(KEYS[2], KEYS[3], release, {"done", created, now, 1})
end
if ARGV[3] ~= "" then
  redis.call("PEXPIRE", key, ARGV[3])
end
return finish(KEYS[2], KEYS[3], release, {
  "done", created, now + ttl, 0, user or "", meta_number(seen) or 0
})
