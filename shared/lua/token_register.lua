-- List a new access token among the user's, so /logout can say how many it ends and
-- /sessions can show it, and read the session generation it is sealed at (in the same
-- step, so a /logout after this ends it, and one before does not: lib_register_token.lua).
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
--!include lib_register_token.lua
local counts, generation = register_token(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]),
  ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if not counts then
  return {0, generation}
end
if KEYS[2] then
  return {1, generation, redis.call("XADD", KEYS[2], "*",
    "t", ARGV[8], "c", ARGV[9], "d", ARGV[10], "ts", ARGV[11])}
end
return {1, generation}
