-- Store a new OpenID Connect authorization code at the user's current session
-- generation (a /logout before its redeem ends it).
-- KEYS[1] the code (keys.oidc_code)   KEYS[2] the user (hash, as in token_register.lua)
-- ARGV[1] client id  ARGV[2] redirect URI  ARGV[3] S256 challenge  ARGV[4] nonce ("" none)
-- ARGV[5] scope  ARGV[6] auth_time (unix s)  ARGV[7] user record  ARGV[8] expiry (ms)
-- ARGV[9] the key's TTL (s)
-- ARGV[10] the generation the user approved at, or "" for the current one
-- Returns 1, or 0 (nothing stored) when ARGV[10] is no longer the user's generation.
local generation = redis.call("HGET", KEYS[2], "g") or "0"
if ARGV[10] ~= "" and ARGV[10] ~= generation then
  return 0
end
redis.call("HSET", KEYS[1], "c", ARGV[1], "r", ARGV[2], "p", ARGV[3], "n", ARGV[4],
  "s", ARGV[5], "a", ARGV[6], "u", ARGV[7], "g", generation, "e", ARGV[8])
redis.call("EXPIRE", KEYS[1], ARGV[9])
return 1
