-- Read a deep-link login request for its client; hand an approval out once.
-- KEYS[1] the request (hash)
-- ARGV[1] the asking client's key hash ("" when the API is open)
-- Returns one of:
--   {"gone"}                                unknown, expired, another client's
--   {"pending", ttl ms, state or ""}
--   {"denied", ttl ms, state or ""}   (an authorization page redirects with its state)
--   {"approved", user JSON, has state (0/1), state, generation}   and the request is
--   deleted (the token is sealed from these: nothing else to write)
local found = redis.call("HMGET", KEYS[1], "st", "c", "u", "s", "g")
local status, client, user, state, generation = found[1], found[2], found[3], found[4], found[5]
if not status or client ~= ARGV[1] then
  return {"gone"}
end
if status == "approved" then
  redis.call("DEL", KEYS[1])
  if state then
    return {"approved", user, 1, state, generation or "0"}
  end
  return {"approved", user, 0, "", generation or "0"}
end
return {status, redis.call("PTTL", KEYS[1]), state or ""}
