-- Names shared by the scripts of the hash layout, sent after common.lua.
--
-- A session is a hash with one field per top-level key, holding that
-- value's JSON, plus the meta fields below. Stored keys that start with a
-- space are escaped with a second space (or start with " ~"), so a name of
-- one space and a letter can never be a stored key.

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
-- How many meta fields a session hash holds.
local META_FIELDS = 4
-- The field of a rotated-away id that names the id it redirects to. A
-- redirect holds this field and EXPIRES, nothing else.
local REDIRECT = " redirect"
