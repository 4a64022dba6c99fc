-- End one access token, if it still counts: its id is marked revoked until it would
-- have expired anyway.
-- KEYS[1] the user (hash, as in token_register.lua)
-- ARGV[1] token id   ARGV[2] its generation   ARGV[3] its expiry (unix s)   ARGV[4] now (s)
-- KEYS[2], ARGV[5..9] (only for an API client's revoke): the user's event stream, the
--         user id, and token.revoked's type, client, data without `user` (the script
--         puts the user's record first), time (shared.events); appended when it ends
-- Returns 1 when it was live and is now revoked, else 0.
--!include lib_user_json.lua
if (redis.call("HGET", KEYS[1], "g") or "0") ~= ARGV[2] then
  return 0
end
local state = redis.call("HGET", KEYS[1], ARGV[1])
if state and string.sub(state, 1, 1) == "-" then
  return 0
end
redis.call("HSET", KEYS[1], ARGV[1], "-" .. ARGV[3])
local left = tonumber(ARGV[3]) - tonumber(ARGV[4])
if redis.call("TTL", KEYS[1]) < left then
  redis.call("EXPIRE", KEYS[1], math.max(1, left))
end
if KEYS[2] then
  local data = '{"user":' .. user_json(ARGV[5], redis.call("HGET", KEYS[1], "r")) .. ","
    .. string.sub(ARGV[8], 2)
  redis.call("XADD", KEYS[2], "*",
    "t", ARGV[6], "c", ARGV[7], "d", data, "ts", ARGV[9])
end
return 1
