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

-- Release the lock after a write that asked for it (ARGV[1] the token,
-- `release` true), leaving a short-lived receipt of the write's `reply` under
-- `receipt_key`: a client that re-sends the script after a lost reply finds
-- the lock gone, and gets the same reply instead of "lock_lost".
local function finish(lock_key, receipt_key, release, reply)
  if release and ARGV[1] ~= "" then
    redis.call("DEL", lock_key)
    redis.call("SET", receipt_key, ARGV[1] .. " " .. cjson.encode(reply), "PX", 60000)
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

-- The id a stored document redirects to, or nil for a session document,
-- and when the redirect's grace period ends (nil if it does not say).
-- A redirect is short; decoding a long session here would block Redis for
-- nothing.
local function redirect_target(raw)
  if #raw < 512 and string.find(raw, '"redirectTo"', 1, true) then
    local doc = cjson.decode(raw)
    if doc.data == cjson.null and type(doc.meta) == "table" then
      return doc.meta.redirectTo, tonumber(doc.meta.expiresAt)
    end
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
