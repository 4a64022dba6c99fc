-- Forget a user's current code and token index; return the live token hashes.
-- KEYS[1] user's token index (zset)  KEYS[2] user's current code hash
-- ARGV[1] now (ms)
-- Returns {current code hash or "", token hash, token hash, ...}
local live = redis.call("ZRANGEBYSCORE", KEYS[1], ARGV[1], "+inf")
local current = redis.call("GET", KEYS[2]) or ""
redis.call("DEL", KEYS[1], KEYS[2])
table.insert(live, 1, current)
return live
