-- Apply changed paths to one session document, atomically with the lock check.
--
-- KEYS[1]  the session key, <prefix>{<sid>}
-- KEYS[2]  the lock key, <prefix><lock_prefix>{<sid>}
-- ARGV[1]  the caller's lock token, or "" when it holds no lock
-- ARGV[2]  now, in milliseconds since the epoch
-- ARGV[3]  the new time to live in milliseconds, or "" to keep the expiry
-- ARGV[4]  "1" to create the session when it does not exist, else "0"
-- ARGV[5]  the largest the document may become, in bytes
-- ARGV[6]  the session id, written into a created document's meta
-- ARGV[7]  the number of changes, then each change as:
--          "s", depth, key 1 .. key depth, value JSON   (set a path)
--          "d", depth, key 1 .. key depth               (delete a path)
--
-- Returns {"locked"}, {"lock_lost"}, {"missing"}, {"redirected", sid},
-- {"too_large", size} or {"done", created_ms, expires_ms, emptied}.
-- Nothing is written unless the reply is "done".

-- cjson settings are global to the server: set the ones relied on here.
cjson.encode_number_precision(14)
cjson.encode_max_depth(1000)
cjson.decode_max_depth(1000)
cjson.encode_sparse_array(false, 2, 10)

local token = ARGV[1]
local holder = redis.call("GET", KEYS[2])
if token ~= "" then
  if holder ~= token then
    return {"lock_lost"}
  end
elseif holder then
  return {"locked"}
end

local now = tonumber(ARGV[2])
local doc
local raw = redis.call("GET", KEYS[1])
if raw then
  doc = cjson.decode(raw)
  if doc.data == cjson.null then
    return {"redirected", doc.meta.redirectTo}
  end
elseif ARGV[4] == "1" then
  doc = {data = {}, meta = {id = ARGV[6], createdAt = now}}
else
  return {"missing"}
end

-- A tag is a one-key object whose key is a space and one letter. A user's
-- key " " is stored as two spaces: that dict is no tag.
local function is_tag(value)
  local key = next(value)
  return type(key) == "string" and string.find(key, "^ %a$") ~= nil
    and next(value, key) == nil
end

-- The dict at parent[key], replacing whatever else is there.
local function dict_at(parent, key)
  local child = parent[key]
  if type(child) ~= "table" or child[1] ~= nil or is_tag(child) then
    child = {}
    parent[key] = child
  end
  return child
end

local data = doc.data
local index = 8
for _ = 1, tonumber(ARGV[7]) do
  local op = ARGV[index]
  local depth = tonumber(ARGV[index + 1])
  local first = index + 2
  local last = first + depth - 1
  local node = data
  for position = first, last - 1 do
    if op == "s" then
      node = dict_at(node, ARGV[position])
    else
      node = node[ARGV[position]]
      if type(node) ~= "table" or node[1] ~= nil or is_tag(node) then
        node = nil
        break
      end
    end
  end
  if op == "s" then
    node[ARGV[last]] = cjson.decode(ARGV[last + 1])
    index = last + 2
  else
    if node then
      node[ARGV[last]] = nil
    end
    index = last + 1
  end
end

local created = tonumber(doc.meta.createdAt) or now
if next(data) == nil then
  redis.call("DEL", KEYS[1])
  return {"done", created, now, 1}
end

local ttl
if ARGV[3] ~= "" then
  ttl = tonumber(ARGV[3])
else
  ttl = redis.call("PTTL", KEYS[1])
  if ttl < 0 then
    return {"missing"}
  end
end
doc.meta.expiresAt = now + ttl
local encoded = cjson.encode(doc)
if #encoded > tonumber(ARGV[5]) then
  return {"too_large", #encoded}
end
redis.call("SET", KEYS[1], encoded, "PX", ttl)
return {"done", created, now + ttl, 0}
