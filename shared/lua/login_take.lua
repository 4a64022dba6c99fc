-- Take a pending deep-link login request out of the bot's reach (its page went another
-- way: a typed code). One key, one Cluster slot.
-- KEYS[1] the request (hash)   ARGV[1] the client it must belong to
-- Returns its `s` field (what it asked for), or false when it is unknown, expired,
-- decided, or another client's; the request is deleted when taken.
local found = redis.call("HMGET", KEYS[1], "st", "c", "s")
if found[1] ~= "pending" or found[2] ~= ARGV[1] then
  return false
end
redis.call("DEL", KEYS[1])
return found[3] or ""
