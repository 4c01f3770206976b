-- Replace a session Flask-Session stored with a marker naming the session it
-- moved to, only if the key still holds the very value that was moved.
--
-- KEYS[1]  the Flask-Session key, <SESSION_KEY_PREFIX><sid>
-- ARGV[1]  the value the caller read, and moved
-- ARGV[2]  the marker to leave (see flask_relay_session/migration/mover.py)
-- ARGV[3]  how long the marker lives, in milliseconds
-- ARGV[4]  what every marker starts with
--
-- The same call shortens a marker's life: ARGV[1] and ARGV[2] the marker.
--
-- The value is compared whole, not by a digest: it is sent once per moved
-- session, and the script needs nothing of Redis's Lua but GET and SET.
--
-- Returns {"done"}; {"gone"} when the key no longer exists; {"moved",
-- marker} when it holds a marker already (another mover's, or the caller's
-- own when this call is re-sent after a lost reply); {"changed"} when it
-- holds anything else, which is never sent back.

local kind = redis.call("TYPE", KEYS[1])["ok"]
if kind == "none" then
  return {"gone"}
elseif kind ~= "string" then
  return {"changed"}
end
local current = redis.call("GET", KEYS[1])
if current == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
  return {"done"}
end
if #current <= 256 and string.sub(current, 1, #ARGV[4]) == ARGV[4] then
  return {"moved", current}
end
return {"changed"}
