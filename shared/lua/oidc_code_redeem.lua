-- Redeem an OpenID Connect authorization code, once: check it, spend it, start its
-- token family and list the family's first access token, in one step.
-- KEYS[1] the code   KEYS[2] the user (hash, as in token_register.lua)
-- KEYS[3] the new family (keys.oidc_family)
-- ARGV[1] now (ms)   ARGV[2] client id   ARGV[3] redirect URI
-- ARGV[4] S256 challenge of the verifier presented ("" when the verifier is malformed)
-- ARGV[5] the new family's hash   ARGV[6] access token id   ARGV[7] its expiry (unix s)
-- ARGV[8] how long the family, the spent code and the user's hash live (s)
-- ARGV[9] the access token's field tail in the user's hash: "<network>|<family>|<client
-- name>" (shared/tokens.py); the session began at the code's auth_time
-- Returns {1, generation, nonce, scope, auth_time, record} when redeemed;
-- {2, family hash} when the code was redeemed before (a reuse: revoke that family);
-- {0} otherwise (unknown, expired, refused: the code is spent either way).
--!include lib_list_token.lua
if redis.call("EXISTS", KEYS[1]) == 0 then
  return {0}
end
local ttl = tonumber(ARGV[8])
local spent = redis.call("HGET", KEYS[1], "f")
if spent then
  if spent ~= "-" then
    return {2, spent}
  end
  return {0}
end
local code = redis.call("HMGET", KEYS[1], "c", "r", "p", "n", "s", "a", "u", "g", "e")
local generation = redis.call("HGET", KEYS[2], "g") or "0"
local ok = tonumber(code[9]) > tonumber(ARGV[1]) and code[1] == ARGV[2]
  and code[2] == ARGV[3] and ARGV[4] ~= "" and code[3] == ARGV[4] and code[8] == generation
redis.call("DEL", KEYS[1])
if not ok then
  redis.call("HSET", KEYS[1], "f", "-")
  redis.call("EXPIRE", KEYS[1], ttl)
  return {0}
end
redis.call("HSET", KEYS[1], "f", ARGV[5])
redis.call("EXPIRE", KEYS[1], ttl)
redis.call("HSET", KEYS[3], "c", code[1], "n", 0, "g", generation, "s", code[5],
  "a", code[6], "u", code[7], "t" .. ARGV[6], ARGV[7])
redis.call("EXPIRE", KEYS[3], ttl)
-- the access token in the user's hash, as token_register.lua lists one
list_token(KEYS[2], ARGV[6], ARGV[7], tonumber(code[6]), math.floor(tonumber(ARGV[1]) / 1000),
  ARGV[9])
redis.call("HSET", KEYS[2], "r", code[7])
if redis.call("TTL", KEYS[2]) < ttl then
  redis.call("EXPIRE", KEYS[2], ttl)
end
return {1, generation, code[4], code[5], code[6], code[7]}
