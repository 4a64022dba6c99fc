-- Create a push approval for a user the bot knows, under the user's limits: one step in
-- the user's Cluster slot (every key is tagged by the user).
-- KEYS[1] the user (hash; `r` is the record of a user who logged in through tglogin)
-- KEYS[2] the approval (hash)   KEYS[3] the user's approval count in the window, all
-- clients together   KEYS[4] the user's approval count in the window from this client
-- ARGV[1] client key hash   ARGV[2] client name   ARGV[3] the action text
-- ARGV[4] state   ARGV[5] 1 when there is a state, 0 when none
-- ARGV[6] match number ("" none)   ARGV[7] lifetime (ms)   ARGV[8] the user's limit per
-- client   ARGV[9] user window (s)   ARGV[10] the user id   ARGV[11] the id's seed
-- (random; the id is a keyed hash of it, so only AUTH_SECRET's holder turns it into the
-- id: events)   ARGV[12] the user's limit, all clients together
-- ARGV[13] how long a pending record outlasts its expiry (ms): the bot's sweep marks it
-- expired (approval_expire.lua, with approval.expired) and shortens it then; a sweep
-- late by up to this long still finds it (shared.approval_due.PENDING_KEEP_MS)
-- Each client has its own budget for the user (one client's spam never refuses another's
-- approval), under a larger ceiling for all clients (many clients cannot flood the user).
-- Returns {1, expiry ms} created; {0, 0} unknown user; {2, ms until every full window
-- ends} over a limit (nothing written but the count checks); {3, 0} too late: the key is
-- taken by a tombstone (the sweep found no approval at its check time and wrote one,
-- approval_expire.lua), so nothing is written and the caller answers 503.
if redis.call("EXISTS", KEYS[2]) == 1 then
  return {3, 0}
end
if redis.call("HEXISTS", KEYS[1], "r") == 0 then
  return {0, 0}
end
local wait = nil
for _, limit in ipairs({{KEYS[4], ARGV[8]}, {KEYS[3], ARGV[12]}}) do
  if tonumber(redis.call("GET", limit[1]) or "0") >= tonumber(limit[2]) then
    local left = redis.call("PTTL", limit[1])
    if wait == nil or left > wait then
      wait = left
    end
  end
end
if wait ~= nil then
  return {2, wait}
end
for _, count in ipairs({KEYS[4], KEYS[3]}) do
  redis.call("INCR", count)
  redis.call("EXPIRE", count, ARGV[9], "NX")
end
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[7])
local expiry = now_ms + ttl
redis.call("HSET", KEYS[2], "c", ARGV[1], "n", ARGV[2], "t", ARGV[3], "st", "pending",
  "e", tostring(expiry), "uid", ARGV[10], "i", ARGV[11])
if ARGV[5] == "1" then
  redis.call("HSET", KEYS[2], "s", ARGV[4])
end
if ARGV[6] ~= "" then
  redis.call("HSET", KEYS[2], "m", ARGV[6])
end
-- pending until `e`, then read as expired until the sweep marks it so (which sets its
-- lifetime from then), or a decision does
redis.call("PEXPIRE", KEYS[2], ttl + tonumber(ARGV[13]))
return {1, expiry}
