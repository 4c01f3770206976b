-- The definitions shared by the session scripts: a library, not a script.
--
-- Each top-level `local` below, with the comment right above it, is one
-- definition. A script names the definitions it uses in `-- uses:` lines,
-- and so does a definition that uses others, last in its comment.
-- flask-relay-session sends a script with the definitions it needs,
-- directly or not, in front of it, in the order of this file and then
-- hash_common.lua (see stores/scripts.py): a definition uses only those
-- above it, and each script stays one self-contained EVAL that carries only
-- what it uses.

-- cjson, set up as the scripts rely on it: code here says `json`, never
-- `cjson`. cjson's settings are global to the server and any script may
-- change them, so every script that encodes or decodes JSON sets them
-- first, by using this. Each is read first and set only when it differs:
-- setting one costs cjson an snprintf of the error message it would raise,
-- and the four together cost more than a short Redis command.
local json = cjson
if json.encode_number_precision() ~= 14 then
  json.encode_number_precision(14)
end
if json.encode_max_depth() ~= 1000 then
  json.encode_max_depth(1000)
end
if json.decode_max_depth() ~= 1000 then
  json.decode_max_depth(1000)
end
do
  local convert, ratio, safe = json.encode_sparse_array()
  if convert or ratio ~= 2 or safe ~= 10 then
    json.encode_sparse_array(false, 2, 10)
  end
end

-- The reply that refuses a write because of the lock, or nil to go on.
-- A caller with a token must still hold the lock; a caller without one must
-- find it free.
local function lock_refusal(lock_key, token)
  local holder = redis.call("GET", lock_key)
  if token ~= "" then
    if holder ~= token then
      return {"lock_lost"}
    end
  elseif holder then
    return {"locked"}
  end
  return nil
end

-- The reply of the read `command` on `key`, with any further arguments, or
-- nil and the key's type when it holds another type than the command reads.
-- The command fails on such a key with WRONGTYPE: only then does TYPE run,
-- which saves every other run a call. Any other failure is raised as the
-- command raises it.
local function read_key(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) ~= "table" or not reply.err then
    return reply
  elseif not string.find(reply.err, "WRONGTYPE", 1, true) then
    return redis.call(command, key, ...)
  end
  return nil, redis.call("TYPE", key)["ok"]
end

-- How long a write leaves a trace for a client that re-sends it after a
-- lost reply (redis-py's Retry re-sends within a few seconds): a lock
-- release's receipt, a rotation's tombstone.
local RESEND_WINDOW = 60000

-- Release the lock after a write that asked for it (ARGV[1] the token,
-- `release` true), leaving a short-lived receipt of the write's `reply` under
-- `receipt_key`: a client that re-sends the script after a lost reply finds
-- the lock gone, and gets the same reply instead of "lock_lost".
-- uses: json, RESEND_WINDOW
local function finish(lock_key, receipt_key, release, reply)
  if release and ARGV[1] ~= "" then
    redis.call("DEL", lock_key)
    redis.call("SET", receipt_key, ARGV[1] .. " " .. json.encode(reply), "PX", RESEND_WINDOW)
  end
  return reply
end

-- The reply a re-sent write that released the lock got the first time, or
-- nil.
-- uses: json
local function receipt(receipt_key, token)
  local stored = redis.call("GET", receipt_key)
  if stored and string.sub(stored, 1, #token + 1) == token .. " " then
    return json.decode(string.sub(stored, #token + 2))
  end
  return nil
end

-- Whether `value` is a session id as a redirect names it: letters and
-- digits only. Twin: `_is_id` in stores/layouts.py.
local function is_id(value)
  return type(value) == "string" and string.find(value, "^%w+$") ~= nil
end

-- Whether a decoded JSON value is a time the meta data can hold: an
-- integer of at most 14 digits, all of which cjson keeps. Twin:
-- `_is_meta_number` in stores/layouts.py.
local function is_meta_number(value)
  return type(value) == "number" and value == math.floor(value)
    and math.abs(value) < 1e14
end

-- The id a stored document redirects to, or nil for anything else, and
-- when the redirect's grace period ends (nil if it does not say). A
-- redirect is short; decoding a long session here would block Redis for
-- nothing. Twin: `JsonLayout.redirect` in stores/layouts.py.
-- uses: json, is_id, is_meta_number
local function redirect_target(raw)
  if #raw >= 512 or not string.find(raw, '"redirectTo"', 1, true) then
    return nil
  end
  local ok, doc = pcall(json.decode, raw)
  if not ok or type(doc) ~= "table" or doc.data ~= json.null
    or type(doc.meta) ~= "table" then
    return nil
  end
  local target, expires = doc.meta.redirectTo, doc.meta.expiresAt
  if is_id(target) and (expires == nil or is_meta_number(expires)) then
    return target, expires
  end
  return nil
end

-- The document that redirects a rotated-away id to its successor until
-- `expires`. The redirect carries its own end: a load pipelines GET and
-- PEXPIRE without a script, so a rotation landing between the two can
-- leave the redirect with a session's TTL; the next load restores the end
-- with PEXPIREAT, and writes check it here.
-- uses: json
local function redirect_document(target, expires)
  return json.encode({data = json.null, meta = {redirectTo = target, expiresAt = expires}})
end

-- The server's clock, in milliseconds since the epoch.
local function server_now()
  local time = redis.call("TIME")
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Whether a redirect whose grace period ends at `expires` (nil: it does not
-- say, and its TTL is the truth) is over.
-- uses: server_now
local function grace_over(expires)
  return expires ~= nil and expires <= server_now()
end

-- A tag is a one-key object whose key is a space and one ASCII letter. A
-- user's key " " is stored as two spaces: that dict is no tag. Twin: the
-- tag test of `is_dict` in stores/paths.py.
local function is_tag(value)
  local key = next(value)
  return type(key) == "string" and string.find(key, "^ %a$") ~= nil
    and next(value, key) == nil
end

-- Whether a decoded value is a dict: not a list, a scalar or a tagged value.
-- Twin: `is_dict` in stores/paths.py.
-- uses: is_tag
local function is_dict(value)
  return type(value) == "table" and value[1] == nil and not is_tag(value)
end

-- The dict at parent[key], replacing whatever else is there.
-- uses: is_dict
local function dict_at(parent, key)
  local child = parent[key]
  if not is_dict(child) then
    child = {}
    parent[key] = child
  end
  return child
end

-- The merge rule of one change, the only one in Lua: apply it to the
-- decoded tree `root`, whose keys are the first keys of the paths. The path
-- is ARGV[first .. last]; a set's value JSON is ARGV[last + 1]. Setting
-- creates the dicts above the path and replaces anything there that is not
-- a dict; deleting a path that does not exist does nothing. Returns whether
-- anything changed. Twin: `apply_change` in stores/paths.py.
-- uses: json, is_dict, dict_at
local function apply_change(root, op, first, last)
  local node = root
  for position = first, last - 1 do
    if op == "s" then
      node = dict_at(node, ARGV[position])
    else
      node = node[ARGV[position]]
      if not is_dict(node) then
        return false
      end
    end
  end
  if op == "s" then
    node[ARGV[last]] = json.decode(ARGV[last + 1])
    return true
  end
  if node[ARGV[last]] == nil then
    return false
  end
  node[ARGV[last]] = nil
  return true
end

-- Python's json, which writes the values a session stores (see `dumps` in
-- stores/paths.py), and cjson write them byte for byte alike but for two
-- characters cjson escapes: "/" as "\/" and U+007F as "\u007f". Called with
-- each escape sequence of cjson's output (the escaped character and up to
-- four hex digits after it), this returns Python's text for the two, and
-- nil (keep it) for the others.
local function as_python_writes(char, hex)
  if char == "/" then
    return "/" .. hex
  elseif char == "u" and hex == "007f" then
    return "\127"
  end
  return nil
end

-- `value` as JSON, written as Python's json writes it: a value rewritten
-- here is stored, and measured against RELAY_SESSION_MAX_SIZE, exactly as
-- the same value sent whole by Python (see `session_size` in
-- stores/paths.py).
-- uses: json, as_python_writes
local function encode(value)
  local text = json.encode(value)
  if string.find(text, "\\/", 1, true) or string.find(text, "\\u007f", 1, true) then
    text = string.gsub(text, "\\(.)(%x?%x?%x?%x?)", as_python_writes)
  end
  return text
end

-- A session document split before its meta data: the text up to and with
-- `,"meta":`, and the meta data decoded; nil when `raw` does not end with
-- meta data. The meta data is written last (see merge.lua and
-- `JsonLayout.copy` in stores/layouts.py) and no string holds `,"meta":{`
-- unescaped, so its last occurrence starts it: the data is neither decoded
-- nor copied into Lua more than once. `raw` may be just the end of a
-- document, as GETRANGE reads it. Twin: `split_meta` in stores/layouts.py.
-- uses: json
local function split_meta(raw)
  local at, from = nil, 1
  while true do
    local found = string.find(raw, ',"meta":{', from, true)
    if not found then
      break
    end
    at, from = found, found + 1
  end
  if not at or string.sub(raw, -1) ~= "}" then
    return nil
  end
  local ok, meta = pcall(json.decode, string.sub(raw, at + 8, -2))
  if not ok or type(meta) ~= "table" then
    return nil
  end
  return string.sub(raw, 1, at + 7), meta
end

-- Record who a session belongs to in its decoded meta data `meta`, as
-- ARGV[first] .. ARGV[first + 4] say: the mode, "bind" (to the user),
-- "seen" (that the user was seen, only while the session is still bound to
-- that user) or "unbind"; the user; when it was seen; its user agent and
-- address ("" for none). Returns the user the session was bound to before
-- ("" for none), and whether anything changed. Twin: `hash_record_user` in
-- hash_common.lua, and `_Entry.record` in stores/memory.py.
local function record_user(meta, first)
  local mode = ARGV[first]
  local previous = type(meta.user) == "string" and meta.user or ""
  if mode == "unbind" then
    meta.user, meta.seen, meta.agent, meta.ip = nil, nil, nil, nil
    return previous, previous ~= ""
  end
  local user = ARGV[first + 1]
  if mode == "seen" and previous ~= user then
    return previous, false
  end
  meta.user, meta.seen = user, tonumber(ARGV[first + 2])
  meta.agent = ARGV[first + 3] ~= "" and ARGV[first + 3] or nil
  meta.ip = ARGV[first + 4] ~= "" and ARGV[first + 4] or nil
  return previous, true
end
