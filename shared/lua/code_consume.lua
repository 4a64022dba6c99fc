-- Redeem a code: its live state becomes redeemed, once, while it has not expired.
-- KEYS[1] the code (lib_code.lua)
-- ARGV[1] now (ms)   ARGV[2] the user id the lookup found in it
-- Returns the code's value when this call redeemed it, else false (unknown, expired,
-- replaced, already redeemed, or no longer that user's).
--!include lib_code.lua
local value = redis.call("GET", KEYS[1])
if live_code(value, tonumber(ARGV[1])) ~= ARGV[2] then
  return false
end
mark_redeemed(KEYS[1], value)
return value
