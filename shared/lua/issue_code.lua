-- Make a new code the user's one live code, unless the user is over the issue limit.
-- All keys carry the user's hash tag, so this runs in one Cluster slot. The code's own
-- key (code hash -> user id) is written beside this; a code redeems only while it is
-- the `c` of its user here, so the new code replaces the previous one in this one step.
-- KEYS[1] the user (hash: r record, g generation, c current code hash, ce its expiry ms)
-- KEYS[2] user's issue times (zset)   KEYS[3] user's updates that issued a code (zset)
-- ARGV[1] now (ms)  ARGV[2] window (ms)  ARGV[3] limit  ARGV[4] new code hash
-- ARGV[5] code TTL (ms)  ARGV[6] update key ("" when none)  ARGV[7] updates TTL (s)
-- ARGV[8] the user record (JSON)  ARGV[9] how long the user's record lives (s)
-- Returns {status, value}:
--   {1, ""}                   issued
--   {0, wait ms}              over the limit
--   {2, "1" or ""}            this update issued its code already ("1": it is still the
--                             user's live code, so the same reply may be sent again)
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if ARGV[6] ~= "" then
  -- remember update keys for ARGV[7] seconds: long enough for any redelivery
  redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now - tonumber(ARGV[7]) * 1000)
  if redis.call("ZADD", KEYS[3], "NX", now, ARGV[6]) == 0 then
    local current = redis.call("HMGET", KEYS[1], "c", "ce")
    if current[1] == ARGV[4] and tonumber(current[2] or "0") > now then
      return {2, "1"}
    end
    return {2, ""}
  end
  redis.call("EXPIRE", KEYS[3], ARGV[7])
end
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now - window)
if redis.call("ZCARD", KEYS[2]) >= tonumber(ARGV[3]) then
  local oldest = redis.call("ZRANGE", KEYS[2], 0, 0, "WITHSCORES")
  if ARGV[6] ~= "" then
    redis.call("ZREM", KEYS[3], ARGV[6])  -- refused: asking again is a new try
  end
  return {0, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call("ZADD", KEYS[2], now, ARGV[4])
redis.call("PEXPIRE", KEYS[2], window)
redis.call("HSET", KEYS[1], "c", ARGV[4], "ce", now + tonumber(ARGV[5]), "r", ARGV[8])
redis.call("EXPIRE", KEYS[1], ARGV[9])
return {1, ""}
