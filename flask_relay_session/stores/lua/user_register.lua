-- Add a session to the registry of its user, or move its entry's end.
--
-- KEYS[1]  the registry, <prefix>user:{<escaped user id>}: a sorted set of
--          session ids, each scored with the time its entry lasts until
-- ARGV[1]  now, in milliseconds since the epoch
-- ARGV[2]  the session id
-- ARGV[3]  until when its entry lasts, in milliseconds since the epoch
--
-- Entries past their end are dropped on the way, and the registry expires
-- with its last entry: its TTL is never shorter than any entry's end (see
-- stores/users.py). Both are counted from ARGV[1], the app's clock, which
-- the ends are written by.
--
-- A registry key that holds something else than a sorted set is replaced:
-- the name is the extension's, and a session must never be bound without
-- being listed.
--
-- Returns 1 when the key held something else, and was replaced; else 0.

local replaced = 0
local kind = redis.call("TYPE", KEYS[1])["ok"]
if kind ~= "zset" and kind ~= "none" then
  redis.call("DEL", KEYS[1])
  replaced = 1
end
local now, until_ = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. ARGV[1])
redis.call("ZADD", KEYS[1], "GT", ARGV[3], ARGV[2])
if until_ > now and redis.call("PTTL", KEYS[1]) < until_ - now then
  redis.call("PEXPIRE", KEYS[1], until_ - now)
end
return replaced
