-- Admit one attempt that may fail (a redeem) against an address's failure budget.
-- Only failures spend the budget; attempts in flight hold room in it until they are
-- settled, so a burst of guesses cannot overrun it, while a burst of valid redeems
-- is held back a moment at worst, never refused.
-- KEYS[1] failures in the window (counter)   KEYS[2] attempts in flight (zset id -> ms)
-- ARGV[1] now (ms)   ARGV[2] limit   ARGV[3] attempt id   ARGV[4] in-flight lifetime (ms)
-- Returns {0, 0} admitted, {1, ms until the window ends} over the limit,
-- {2, 0} no room now: attempts in flight may free it (ask again shortly).
local now = tonumber(ARGV[1])
local failures = tonumber(redis.call("GET", KEYS[1]) or "0")
if failures >= tonumber(ARGV[2]) then
  return {1, math.max(1, redis.call("PTTL", KEYS[1]))}
end
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now - tonumber(ARGV[4]))
if failures + redis.call("ZCARD", KEYS[2]) >= tonumber(ARGV[2]) then
  return {2, 0}
end
redis.call("ZADD", KEYS[2], now, ARGV[3])
redis.call("PEXPIRE", KEYS[2], ARGV[4])
return {0, 0}
