-- Apply changed paths to one session document, atomically with the lock check.
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
-- ARGV[5]  the largest the session may become, in bytes (see `session_size`
--          in stores/paths.py)
-- ARGV[6]  the number of changes, then each change as:
--          "s", depth, key 1 .. key depth, value JSON   (set a path)
--          "d", depth, key 1 .. key depth               (delete a path)
--          then, to record who the session belongs to along with the
--          write, five more: mode, user, seen, agent, address (see
--          `record_user` in common.lua)
--
-- Returns {"locked"}, {"lock_lost"}, {"missing"}, {"redirected", sid},
-- {"foreign", what} when the key holds something that is not a session
-- (`what` says what, in words; the key is left as it is), {"too_large",
-- size} or {"done", created_ms, expires_ms, emptied, user, seen_ms}, the
-- last two the user the session is bound to ("" for none) and when it was
-- last seen (see `record_user` in common.lua).
-- Nothing is written unless the reply is "done".
-- A re-sent script whose first run released the lock gets the first run's
-- reply again (see `finish` in common.lua).
--
-- uses: json, lock_refusal, read_key, finish, receipt, is_meta_number
-- uses: redirect_target, grace_over, is_dict, apply_change, encode, record_user

-- The session document `raw` holds, decoded, or nil and what it holds
-- instead: not JSON, or JSON whose "data" is not a dict or whose "meta" has
-- no integer "createdAt". cjson decodes [] as an empty table, so empty data
-- is a list if "data" is followed by "[". Twin: `JsonLayout.read` in
-- stores/layouts.py, which also decodes every tagged value.
local function session_document(raw)
  local ok, doc = pcall(json.decode, raw)
  if not ok then
    return nil, "a string that is not JSON"
  elseif type(doc) ~= "table" then
    return nil, "JSON that is not a session document"
  elseif not is_dict(doc.data)
    or next(doc.data) == nil and string.find(raw, '"data"%s*:%s*%[') then
    return nil, "a document whose data is not a dict"
  elseif type(doc.meta) ~= "table" or not is_meta_number(doc.meta.createdAt) then
    return nil, "a document without an integer meta.createdAt"
  end
  return doc
end

-- The data, which is not empty, as a JSON object, and the session's size as
-- RELAY_SESSION_MAX_SIZE limits it: the sum, over the top-level keys, of
-- the key's length and its value's JSON's length in bytes, as Python writes
-- it. Twin: `session_size` in stores/paths.py.
--
-- The object is encoded in one call, not value by value. cjson writes it as
-- each key's JSON, a colon and the value's JSON, with commas between and
-- braces around, and an array of the keys as each key's JSON with commas
-- between and brackets around: so the values' JSON is as long as the object
-- less the array and a colon per key. The object is one level deeper than
-- its values, so a value nested as deep as cjson allows fails within it:
-- then the object is written member by member, as cjson writes each alone.
local function encode_data(data)
  local keys, size = {}, 0
  for key in pairs(data) do
    keys[#keys + 1] = key
    size = size + #key
  end
  local ok, text = pcall(encode, data)
  if ok then
    return text, size + #text - #encode(keys) - #keys
  end
  local members = {}
  for key, value in pairs(data) do
    local value_text = encode(value)
    size = size + #value_text
    members[#members + 1] = encode(key) .. ":" .. value_text
  end
  return "{" .. table.concat(members, ",") .. "}", size
end

local release = #KEYS == 3
local refusal = lock_refusal(KEYS[2], ARGV[1])
if refusal then
  return release and refusal[1] == "lock_lost" and receipt(KEYS[3], ARGV[1])
    or refusal
end

local now = tonumber(ARGV[2])
local doc
local raw, kind = read_key("GET", KEYS[1])
if kind then
  return {"foreign", "a Redis " .. kind .. ", not a string"}
elseif raw then
  local target, expires = redirect_target(raw)
  if target and not grace_over(expires) then
    return {"redirected", target}
  elseif target then
    -- A redirect whose grace period is over, kept alive by a load that
    -- refreshed the key while it was rotated: it is gone.
    redis.call("DEL", KEYS[1])
  else
    local what
    doc, what = session_document(raw)
    if not doc then
      return {"foreign", what}
    end
  end
end
if not doc then
  if ARGV[4] ~= "1" then
    return {"missing"}
  end
  -- The id in a created document's meta is the one in the key's hash tag.
  doc = {data = {}, meta = {id = string.match(KEYS[1], "{(%x+)}$"), createdAt = now}}
end

local data = doc.data
local index = 7
for _ = 1, tonumber(ARGV[6]) do
  local op = ARGV[index]
  local first = index + 2
  local last = first + tonumber(ARGV[index + 1]) - 1
  apply_change(data, op, first, last)
  index = op == "s" and last + 2 or last + 1
end
if ARGV[index] then
  record_user(doc.meta, index)
end

local created = doc.meta.createdAt
if next(data) == nil then
  redis.call("DEL", KEYS[1])
  return finish(KEYS[2], KEYS[3], release, {"done", created, now, 1})
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

-- The data is encoded once, measured, and framed with its meta.
local encoded, size = encode_data(data)
if size > tonumber(ARGV[5]) then
  return {"too_large", size}
end
doc.meta.expiresAt = now + ttl
doc.data = nil
local meta = json.encode(doc.meta)
redis.call("SET", KEYS[1], '{"data":' .. encoded .. ',"meta":' .. meta .. "}", "PX", ttl)
local user = type(doc.meta.user) == "string" and doc.meta.user or ""
local seen = is_meta_number(doc.meta.seen) and doc.meta.seen or 0
return finish(KEYS[2], KEYS[3], release, {"done", created, now + ttl, 0, user, seen})
