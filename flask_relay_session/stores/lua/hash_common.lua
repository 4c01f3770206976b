-- The definitions shared by the scripts of the hash layout: a library, not
-- a script, read after common.lua and as it is (see its first comment).
--
-- A session is a hash with one field per top-level key, holding that
-- value's JSON, plus the meta fields below. Stored keys that start with a
-- space are escaped with a second space (or start with " ~"), so a name of
-- one space and a letter can never be a stored key. Twin: the names in
-- stores/layouts.py.

-- When the session was created, in milliseconds since the epoch.
local CREATED = " created"

-- When it expires, as of its last write; between writes the TTL is the truth.
-- In a redirect: when its grace period ends (see `redirect_document`).
local EXPIRES = " expires"

-- The sum of the lengths of its data fields' names and values, in bytes.
local SIZE = " size"

-- A counter bumped by every write: a rotation copies the session only if it
-- did not change meanwhile.
local VERSION = " version"

-- How many meta fields every session hash holds.
local META_FIELDS = 4

-- The meta fields of a session bound to a user (see `record_user` in
-- common.lua): the user, when it was last seen, and the user agent and
-- address it was seen with (both optional).
local USER = " user"
local SEEN = " seen"
local AGENT = " agent"
local IP = " ip"

-- The field of a rotated-away id that names the id it redirects to. A
-- redirect holds this field and EXPIRES, nothing else.
local REDIRECT = " redirect"

-- A meta field's value as a number, or nil when it is missing or not an
-- integer of at most 14 digits. Twin: `_META_NUMBER` in stores/layouts.py.
local function meta_number(text)
  local digits = text and string.match(text, "^%-?(%d+)$")
  if digits and #digits <= 14 then
    return tonumber(text)
  end
  return nil
end

-- What the key of a session holds, told by its meta fields and, when it has
-- none, its type: a kind, and a table of what goes with it:
--   "none"      it does not exist: {};
--   "redirect"  {target = <sid>, expires = <ms, or nil when it does not say>};
--   "session"   {created = <ms>, size = <bytes>, version = <writes>,
--                user = <user id or false>, seen = <SEEN as stored, or false>};
--   "foreign"   anything else, which no script may change: {what = <words>}.
-- Data fields are not read here: a script checks those it decodes. Twin:
-- `HashLayout.redirect` and `HashLayout.read` in stores/layouts.py, which
-- check every field.
-- uses: read_key, is_id, CREATED, EXPIRES, SIZE, VERSION, REDIRECT, USER
-- uses: SEEN, meta_number
local function hash_state(key)
  local meta, kind = read_key(
    "HMGET", key, REDIRECT, EXPIRES, CREATED, SIZE, VERSION, USER, SEEN
  )
  if meta and not (meta[1] or meta[2] or meta[3] or meta[4] or meta[5]) then
    -- A missing key reads as a hash without these fields: TYPE tells.
    kind = redis.call("TYPE", key)["ok"]
  end
  if kind == "none" then
    return "none", {}
  elseif kind and kind ~= "hash" then
    return "foreign", {what = "a Redis " .. kind .. ", not a hash"}
  end
  local expires = meta_number(meta[2])
  if meta[1] and is_id(meta[1]) and (expires or not meta[2]) then
    return "redirect", {target = meta[1], expires = expires}
  end
  local created, size = meta_number(meta[3]), meta_number(meta[4])
  local version = meta_number(meta[5])
  if meta[1] or not (expires and created and size and version) then
    return "foreign", {what = "a hash without the meta fields of a session"}
  end
  return "session", {
    created = created, size = size, version = version, user = meta[6],
    seen = meta[7],
  }
end

-- How many data fields the session hash `key` holds: its fields but the
-- meta fields.
-- uses: META_FIELDS, USER, SEEN, AGENT, IP
local function data_field_count(key)
  local count = redis.call("HLEN", key) - META_FIELDS
  for _, present in ipairs(redis.call("HMGET", key, USER, SEEN, AGENT, IP)) do
    if present then
      count = count - 1
    end
  end
  return count
end

-- Record who the session hash `key` belongs to, as `record_user` in
-- common.lua records it in a document, from the same arguments. Returns
-- the user it was bound to before ("" for none), and whether anything
-- changed.
-- uses: USER, SEEN, AGENT, IP
local function hash_record_user(key, first)
  local mode = ARGV[first]
  local previous = redis.call("HGET", key, USER) or ""
  if mode == "unbind" then
    redis.call("HDEL", key, USER, SEEN, AGENT, IP)
    return previous, previous ~= ""
  end
  local user = ARGV[first + 1]
  if mode == "seen" and previous ~= user then
    return previous, false
  end
  redis.call("HSET", key, USER, user, SEEN, ARGV[first + 2])
  for offset, field in ipairs({AGENT, IP}) do
    local value = ARGV[first + 2 + offset]
    if value ~= "" then
      redis.call("HSET", key, field, value)
    else
      redis.call("HDEL", key, field)
    end
  end
  return previous, true
end

-- Run `command` on `key` with the items of the list `items` as its further
-- arguments: one call, or one per thousand items (an even number, so that
-- HSET's field and value pairs stay whole), which Lua's `unpack` can pass.
local function hash_call(command, key, items)
  local last = #items
  for first = 1, last, 1000 do
    redis.call(command, key, unpack(items, first, math.min(first + 999, last)))
  end
end
