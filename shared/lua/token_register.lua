-- List a token sealed elsewhere (a delivered approval) among the user's live tokens, so
-- /logout counts it; only if it still counts (made at the current generation).
-- KEYS[1] the user (hash)   KEYS[2] live token ids (zset)
-- ARGV[1] token id   ARGV[2] its generation   ARGV[3] its expiry (ms)   ARGV[4] TTL (s)
if (redis.call("HGET", KEYS[1], "g") or "0") ~= ARGV[2] then
  return 0
end
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[1])
redis.call("EXPIRE", KEYS[2], ARGV[4])
return 1
