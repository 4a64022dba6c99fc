-- Revoke an OpenID Connect token family: its refresh token stops working and every
-- access token it issued that has not expired is marked revoked in the user's hash
-- (as token_revoke.lua marks one), so it stops counting too.
-- KEYS[1] the family   KEYS[2] the user (hash, as in token_register.lua)
-- ARGV[1] now (unix s)
-- Returns how many access tokens it ended.
local now = tonumber(ARGV[1])
local ended = 0
local fields = redis.call("HGETALL", KEYS[1])
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if string.sub(name, 1, 1) == "t" and tonumber(value) > now then
    redis.call("HSET", KEYS[2], string.sub(name, 2), "-" .. value)
    if redis.call("TTL", KEYS[2]) < tonumber(value) - now then
      redis.call("EXPIRE", KEYS[2], tonumber(value) - now)
    end
    ended = ended + 1
  end
end
redis.call("DEL", KEYS[1])
return ended
