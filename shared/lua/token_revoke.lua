-- End one access token, if it still counts: its id is marked revoked until it would
-- have expired anyway.
-- KEYS[1] the user (hash, as in token_register.lua)
-- ARGV[1] token id   ARGV[2] its generation   ARGV[3] its expiry (unix s)   ARGV[4] now (s)
-- Returns 1 when it was live and is now revoked, else 0.
if (redis.call("HGET", KEYS[1], "g") or "0") ~= ARGV[2] then
  return 0
end
local state = redis.call("HGET", KEYS[1], ARGV[1])
if state and string.sub(state, 1, 1) == "-" then
  return 0
end
redis.call("HSET", KEYS[1], ARGV[1], "-" .. ARGV[3])
local left = tonumber(ARGV[3]) - tonumber(ARGV[4])
if redis.call("TTL", KEYS[1]) < left then
  redis.call("EXPIRE", KEYS[1], math.max(1, left))
end
return 1
