-- Redeem a code: its live state becomes redeemed, once, while it has not expired.
-- KEYS[1] the code (string "<state><user id>|<expiry ms>|<update mark>|<generation>|
--         <record>", see shared/keys.py)
-- ARGV[1] now (ms)   ARGV[2] the user id the lookup found in it
-- Returns the code's value when this call redeemed it, else false (unknown, expired,
-- replaced, already redeemed, or no longer that user's).
local value = redis.call("GET", KEYS[1])
if not value then
  return false
end
local user, expiry = string.match(value, "^L(%d+)|(%d+)|")
if user ~= ARGV[2] or tonumber(expiry) <= tonumber(ARGV[1]) then
  return false
end
redis.call("SET", KEYS[1], "S" .. string.sub(value, 2), "KEEPTTL")
return value
