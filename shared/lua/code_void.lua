-- Void a live code of a user (a newer code replaces it, or /logout ends it): it stays
-- until its key expires, so its slot still counts toward the issue limit, but it no
-- longer redeems.
-- KEYS[1] the code   ARGV[1] the user id it must belong to
-- Returns 1 when it was live and is now void, else 0.
local value = redis.call("GET", KEYS[1])
if not value or string.sub(value, 1, #ARGV[1] + 2) ~= "L" .. ARGV[1] .. "|" then
  return 0
end
redis.call("SET", KEYS[1], "R" .. string.sub(value, 2), "KEEPTTL")
return 1
