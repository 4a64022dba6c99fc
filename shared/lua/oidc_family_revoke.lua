-- Revoke an OpenID Connect token family: its refresh token stops working and every
-- access token it issued that has not expired is marked revoked in the user's hash
-- (as token_revoke.lua marks one), so it stops counting too.
-- KEYS[1] the family   KEYS[2] the user (hash, as in token_register.lua)
-- ARGV[1] now (unix s)
-- ARGV[2] the client asking (RFC 7009 revocation), or "" for any (a reuse found by a
-- redeem or a refresh)
-- Returns {1, how many access tokens it ended}; {0, 0} when there is no such family
-- (unknown, expired, revoked or ended by /logout); {2, 0} when it is another client's
-- (nothing is changed).
if redis.call("EXISTS", KEYS[1]) == 0 then
  return {0, 0}
end
if ARGV[2] ~= "" and redis.call("HGET", KEYS[1], "c") ~= ARGV[2] then
  return {2, 0}
end
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
return {1, ended}
