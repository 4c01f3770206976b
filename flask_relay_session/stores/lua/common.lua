-- Functions shared by the session scripts. flask-relay-session sends this
-- file in front of each script that uses it, so each script stays one
-- self-contained EVAL.

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
