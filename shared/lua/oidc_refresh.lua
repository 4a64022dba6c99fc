-- Rotate a refresh token of an OpenID Connect token family: the presented one must be
-- the current one (its rotation number); the next one and a new access token replace it.
-- KEYS[1] the family   KEYS[2] the user (hash, as in token_register.lua)
-- ARGV[1] client id   ARGV[2] the presented token's rotation number
-- ARGV[3] new access token id   ARGV[4] its expiry (unix s)   ARGV[5] now (unix s)
-- ARGV[6] how long the family and the user's hash live (s)
-- ARGV[7] the new access token's field tail in the user's hash: "<network>|<family>|
-- <client name>" (shared/tokens.py); the session began at the family's auth_time
-- Returns {1, rotation number, generation, scope, auth_time, record} when rotated;
-- {2} for a token already rotated (a reuse: revoke the family); {0} otherwise.
--!include lib_list_token.lua
if redis.call("EXISTS", KEYS[1]) == 0 then
  return {0}
end
local family = redis.call("HMGET", KEYS[1], "c", "n", "g", "s", "a", "u")
if family[1] ~= ARGV[1] then
  return {0}
end
local generation = redis.call("HGET", KEYS[2], "g") or "0"
if family[3] ~= generation then  -- ended by /logout
  redis.call("DEL", KEYS[1])
  return {0}
end
local current, presented = tonumber(family[2]), tonumber(ARGV[2])
if presented < current then
  return {2}
end
if presented ~= current then
  return {0}
end
local now = tonumber(ARGV[5])
local fields = redis.call("HGETALL", KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 1) == "t" and tonumber(fields[i + 1]) <= now then
    redis.call("HDEL", KEYS[1], fields[i])
  end
end
local ttl = tonumber(ARGV[6])
local next = redis.call("HINCRBY", KEYS[1], "n", 1)
redis.call("HSET", KEYS[1], "t" .. ARGV[3], ARGV[4])
redis.call("EXPIRE", KEYS[1], ttl)
list_token(KEYS[2], ARGV[3], ARGV[4], tonumber(family[5]), now, ARGV[7])
redis.call("HSET", KEYS[2], "r", family[6])
if redis.call("TTL", KEYS[2]) < ttl then
  redis.call("EXPIRE", KEYS[2], ttl)
end
return {1, next, generation, family[4], family[5], family[6]}
