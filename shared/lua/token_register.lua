-- List a new access token among the user's, so /logout can say how many it ends and
-- /sessions can show it, and read the session generation it is sealed at (in the same
-- step, so a /logout after this ends it, and one before does not).
-- KEYS[1] the user (hash: r record, g generation, <token id> -> the token's field,
--         "<expiry s>|<lifetime min>|<used min>|<network>[|<family>[|<client name>]]",
--         or "-<expiry>" once revoked: see shared/tokens.py)
-- ARGV[1] token id   ARGV[2] its expiry (unix s)   ARGV[3] now (unix s)
-- ARGV[4] how long the user's hash lives (s)   ARGV[5] the user record ("" keeps it)
-- ARGV[6] the generation it must be made at ("" for the current one)
-- ARGV[7] the field's tail: "<network>[|<family>[|<client name>]]"
-- KEYS[2], ARGV[8..11] (only for an API client's redeem): the user's event stream and
--         code.redeemed's type, client, data, time (shared.events), appended when the
--         token counts; an open API's redeem passes neither and appends nothing
-- Returns {1, generation[, the event's entry id]} when the token counts (listed, unless
-- 256 are), {0, generation} when the generation moved on.
--!include lib_list_token.lua
local generation = redis.call("HGET", KEYS[1], "g") or "0"
if ARGV[6] ~= "" and ARGV[6] ~= generation then
  return {0, generation}
end
local now = tonumber(ARGV[3])
-- forget tokens that have expired anyway, now and then (a hash of few fields is cheap)
if redis.call("HLEN", KEYS[1]) > 8 then
  local fields = redis.call("HGETALL", KEYS[1])
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name ~= "r" and name ~= "g" then
      local expiry = tonumber(string.match(fields[i + 1], "^-?(%d+)"))
      if expiry <= now then
        redis.call("HDEL", KEYS[1], name)
      end
    end
  end
end
list_token(KEYS[1], ARGV[1], ARGV[2], now, now, ARGV[7])
if ARGV[5] ~= "" then
  redis.call("HSET", KEYS[1], "r", ARGV[5])
end
redis.call("EXPIRE", KEYS[1], ARGV[4])
if KEYS[2] then
  return {1, generation, redis.call("XADD", KEYS[2], "*",
    "t", ARGV[8], "c", ARGV[9], "d", ARGV[10], "ts", ARGV[11])}
end
return {1, generation}
