-- End every access token of a user and void the user's code (`/logout`).
-- Raising the generation ends every token made before this step, including one made
-- at the same moment: a redeem reads the generation in its own atomic step.
-- KEYS[1] the user (hash)   KEYS[2] live token ids (zset)   KEYS[3] revoked ids (zset)
-- ARGV[1] now (ms)   ARGV[2] how long the user's record lives (s)
-- Returns how many live tokens ended.
local ended = redis.call("ZCOUNT", KEYS[2], "(" .. ARGV[1], "+inf")
redis.call("DEL", KEYS[2], KEYS[3])
redis.call("HINCRBY", KEYS[1], "g", 1)
redis.call("HDEL", KEYS[1], "c", "ce")
redis.call("EXPIRE", KEYS[1], ARGV[2])
return ended
