-- Admit a push approval under its client's budget, and write its due entry before anything
-- else of it exists: one step in the slot of APPROVAL_DUE (the client's count is tagged
-- with that key's name, `keys.approval_client_count`), so a Cluster runs it on one node.
-- KEYS[1] the client's approval count in the window   KEYS[2] APPROVAL_DUE
-- ARGV[1] the client's limit   ARGV[2] the client window (s)
-- ARGV[3] the due member "<user id>:<approval key hash>"   ARGV[4] check after (ms)
-- Every attempt counts (a refused one too, so probing who uses the bot costs budget).
-- Returns {1, check time ms} admitted: the member is due at the check time (the bot's
-- sweep then finds the approval created, or not, and goes on from there);
-- {0, ms until the window ends} over the client's limit (nothing else written).
local asked = redis.call("INCR", KEYS[1])
redis.call("EXPIRE", KEYS[1], ARGV[2], "NX")
if asked > tonumber(ARGV[1]) then
  return {0, redis.call("PTTL", KEYS[1])}
end
local now = redis.call("TIME")
local check = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[4])
redis.call("ZADD", KEYS[2], check, ARGV[3])
return {1, check}
