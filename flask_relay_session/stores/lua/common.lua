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

-- The id a stored document redirects to, or nil for a session document.
-- A redirect is short; decoding a long session here would block Redis for
-- nothing.
local function redirect_target(raw)
  if #raw < 512 and string.find(raw, '"redirectTo"', 1, true) then
    local doc = cjson.decode(raw)
    if doc.data == cjson.null and type(doc.meta) == "table" then
      return doc.meta.redirectTo
    end
  end
  return nil
end

-- The document that redirects a rotated-away id to its successor.
local function redirect_document(target)
  return cjson.encode({data = cjson.null, meta = {redirectTo = target}})
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
