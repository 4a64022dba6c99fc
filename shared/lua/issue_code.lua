-- Record a code issue for one user, unless the user is over the issue limit.
-- All keys carry the user's hash tag, so this runs in one Cluster slot.
-- KEYS[1] user's issue times (zset)   KEYS[2] user's current code hash
-- KEYS[3] user's updates that issued a code (zset of update keys, scored by when)
-- ARGV[1] now (ms)  ARGV[2] window (ms)  ARGV[3] limit  ARGV[4] new code hash
-- ARGV[5] code TTL (ms)  ARGV[6] update key ("" when none)  ARGV[7] updates TTL (s)
-- Returns {status, value}:
--   {1, old code hash or ""}  issued
--   {0, wait ms}              over the limit
--   {2, "1" or ""}            this update issued its code already ("1": it is still the
--                             user's current code, so the same reply may be sent again)
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if ARGV[6] ~= "" then
  -- remember update ids for ARGV[7] seconds: long enough for any redelivery
  redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now - tonumber(ARGV[7]) * 1000)
  if redis.call("ZADD", KEYS[3], "NX", now, ARGV[6]) == 0 then
    if redis.call("GET", KEYS[2]) == ARGV[4] then
      return {2, "1"}
    end
    return {2, ""}
  end
  redis.call("EXPIRE", KEYS[3], ARGV[7])
end
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - window)
if redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
  return {0, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call("ZADD", KEYS[1], now, ARGV[4])
redis.call("PEXPIRE", KEYS[1], window)
local old = redis.call("GET", KEYS[2]) or ""
redis.call("SET", KEYS[2], ARGV[4], "PX", ARGV[5])
return {1, old}
