-- Redeem a code: consume it and record the access token made from it, in one step.
-- KEYS[1] the user (hash)   KEYS[2] the user's live token ids (zset id -> expiry ms)
-- ARGV[1] the code's hash   ARGV[2] now (ms)   ARGV[3] the new token's id
-- ARGV[4] its expiry (ms)   ARGV[5] how long the user's record lives (s)
-- Returns {1, user record, generation} when redeemed, {0} when the code is not the
-- user's live code (replaced, expired, already redeemed, or the user logged out).
local found = redis.call("HMGET", KEYS[1], "c", "ce", "r", "g")
local now = tonumber(ARGV[2])
if found[1] ~= ARGV[1] or tonumber(found[2] or "0") <= now or not found[3] then
  return {0}
end
redis.call("HDEL", KEYS[1], "c", "ce")
redis.call("EXPIRE", KEYS[1], ARGV[5])
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
redis.call("ZADD", KEYS[2], ARGV[4], ARGV[3])
redis.call("EXPIRE", KEYS[2], ARGV[5])
return {1, found[3], found[4] or "0"}
