-- Read a push approval for the client that created it. One key, one Cluster slot.
-- KEYS[1] the approval (hash)   ARGV[1] the asking client's key hash ("" open API)
-- A pending approval past its expiry reads as expired (approval_expire.lua, the bot's
-- sweep, is what marks it so, and where its event is appended).
local found = redis.call("HMGET", KEYS[1], "st", "c", "s", "u", "e")
local status, client, state, user, expiry = found[1], found[2], found[3], found[4], found[5]
if not status or client ~= ARGV[1] then
  return {"gone"}
end
local has_state = 0
if state then
  has_state = 1
end
local left = 0
if status == "pending" then
  local now = redis.call("TIME")
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  left = tonumber(expiry) - now_ms
  if left <= 0 then
    status, left = "expired", 0
  end
end
return {status, left, has_state, state or "", user or ""}
