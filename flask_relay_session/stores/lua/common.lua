-- Functions shared by the session scripts. flask-relay-session sends this
-- file in front of each script that uses it, so each script stays one
-- self-contained EVAL.

-- cjson settings are global to the server, and any script may change them:
-- every script that includes this file starts by setting the ones it relies on.
cjson.encode_number_precision(14)
cjson.encode_max_depth(1000)
cjson.decode_max_depth(1000)
cjson.encode_sparse_array(false, 2, 10)

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

-- How long a write leaves a trace for a client that re-sends it after a
-- lost reply (redis-py's Retry re-sends within a few seconds): a lock
-- release's receipt, a rotation's tombstone.
local RESEND_WINDOW = 60000

-- Release the lock after a write that asked for it (ARGV[1] the token,
-- `release` true), leaving a short-lived receipt of the write's `reply` under
-- `receipt_key`: a client that re-sends the script after a lost reply finds
-- the lock gone, and gets the same reply instead of "lock_lost".
local function finish(lock_key, receipt_key, release, reply)
  if release and ARGV[1] ~= "" then
    redis.call("DEL", lock_key)
    redis.call("SET", receipt_key, ARGV[1] .. " " .. cjson.encode(reply), "PX", RESEND_WINDOW)
  end
  return reply
end

-- The reply a re-sent write that released the lock got the first time, or
-- nil.
local function receipt(receipt_key, token)
  local stored = redis.call("GET", receipt_key)
  if stored and string.sub(stored, 1, #token + 1) == token .. " " then
    return cjson.decode(string.sub(stored, #token + 2))
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
local function redirect_target(raw)
  if #raw >= 512 or not string.find(raw, '"redirectTo"', 1, true) then
    return nil
  end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= "table" or doc.data ~= cjson.null
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
local function redirect_document(target, expires)
  return cjson.encode({data = cjson.null, meta = {redirectTo = target, expiresAt = expires}})
end

-- The server's clock, in milliseconds since the epoch.
local function server_now()
  local time = redis.call("TIME")
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Whether a redirect whose grace period ends at `expires` (nil: it does not
-- say, and its TTL is the truth) is over.
local function grace_over(expires)
  return expires ~= nil and expires <= server_now()
end

-- A tag is a one-key object whose key is a space and one letter. A user's
-- key " " is stored as two spaces: that dict is no tag.
local function is_tag(value)
  local key = next(value)
  return type(key) == "string" and string.find(key, "^ %a$") ~= nil
    and next(value, key) == nil
end

-- Whether a decoded value is a dict: not a list, a scalar or a tagged value.
local function is_dict(value)
  return type(value) == "table" and value[1] == nil and not is_tag(value)
end

-- The dict at parent[key], replacing whatever else is there.
local function dict_at(parent, key)
  local child = parent[key]
  if not is_dict(child) then
    child = {}
    parent[key] = child
  end
  return child
end

-- Apply one change to the decoded tree `root`, whose keys are the first
-- keys of the paths. The path is ARGV[first .. last]; a set's value JSON is
-- ARGV[last + 1]. Setting creates the dicts above the path and replaces
-- anything there that is not a dict; deleting a path that does not exist
-- does nothing. Returns whether anything changed.
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
    node[ARGV[last]] = cjson.decode(ARGV[last + 1])
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
local function encode(value)
  local json = cjson.encode(value)
  if string.find(json, "\\/", 1, true) or string.find(json, "\\u007f", 1, true) then
    json = string.gsub(json, "\\(.)(%x?%x?%x?%x?)", as_python_writes)
  end
  return json
end
