-- Turn a pending push approval whose time is up into `expired`: the one step that does
-- (approval_poll.lua and approval_decide.lua only read an approval past its expiry as
-- expired), run by the bot's sweep. One Cluster slot: every key is the user's.
-- KEYS[1] the approval (hash)   KEYS[2] the user (hash; `r` is their record)
-- Returns {1, client name, text, message id or "", has state (0/1), state, user record
-- or ""} when it turned expired now; {0, status or ""} when it is not due yet, was
-- settled before, or is gone.
local found = redis.call("HMGET", KEYS[1], "st", "e", "n", "t", "mid", "s", "i")
local status, expiry = found[1], found[2]
if status ~= "pending" then
  return {0, status or ""}
end
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms < tonumber(expiry) then
  return {0, "pending"}
end
redis.call("HSET", KEYS[1], "st", "expired")
-- EVENT approval.expired (issue 10 items 2-4): appended here, in this step (client: the
-- name found[3]; data: user = the record of KEYS[2], state found[6], the id's seed
-- found[7], which the deliverer turns into the id; nobody decided)
local has_state = 0
if found[6] then
  has_state = 1
end
return {1, found[3] or "", found[4] or "", found[5] or "", has_state, found[6] or "",
  redis.call("HGET", KEYS[2], "r") or ""}
