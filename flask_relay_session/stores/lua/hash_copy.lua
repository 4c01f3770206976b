-- Write a whole session hash: the copy a rotation makes under the new id.
--
-- KEYS[1]  the new session key, <prefix>{<new sid>}
-- ARGV[1]  its time to live in milliseconds
-- ARGV[2]  field, value, field, value, ...: the data and meta fields
--
-- Replaces whatever the key held (a retried copy). Returns 1.

redis.call("DEL", KEYS[1])
for index = 2, #ARGV, 2 do
  redis.call("HSET", KEYS[1], ARGV[index], ARGV[index + 1])
end
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return 1
