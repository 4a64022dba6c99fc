-- End one access token, if it still counts.
-- KEYS[1] the user (hash)   KEYS[2] live token ids (zset)   KEYS[3] revoked ids (zset)
-- ARGV[1] token id   ARGV[2] its generation   ARGV[3] its expiry (ms)   ARGV[4] now (ms)
-- Returns 1 when it was live and is now revoked, else 0.
local now = tonumber(ARGV[4])
if (redis.call("HGET", KEYS[1], "g") or "0") ~= ARGV[2]
    or redis.call("ZSCORE", KEYS[3], ARGV[1]) then
  return 0
end
redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now)
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
-- kept until the last revoked token would have expired anyway
local last = redis.call("ZRANGE", KEYS[3], -1, -1, "WITHSCORES")
redis.call("PEXPIRE", KEYS[3], math.max(1, tonumber(last[2]) - now))
redis.call("ZREM", KEYS[2], ARGV[1])
return 1
