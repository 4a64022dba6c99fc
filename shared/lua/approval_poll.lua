-- Read a push approval for the client that created it. One key, one Cluster slot.
-- KEYS[1] the approval (hash)   ARGV[1] the asking client's key hash ("" open API)
-- A pending approval past its expiry turns `expired` here (and in approval_decide.lua,
-- whichever sees it first).
-- Returns {"gone"} (unknown, gone, another client's) or
--   {status, ms left (pending) or 0, has state (0/1), state, decider JSON or "",
--    1 when it turned expired in this step (the approval.expired event's moment) else 0}
local found = redis.call("HMGET", KEYS[1], "st", "c", "s", "u", "e")
local status, client, state, user, expiry = found[1], found[2], found[3], found[4], found[5]
if not status or client ~= ARGV[1] then
  return {"gone"}
end
local has_state = 0
if state then
  has_state = 1
end
local left, turned = 0, 0
if status == "pending" then
  local now = redis.call("TIME")
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  left = tonumber(expiry) - now_ms
  if left <= 0 then
    -- EVENT approval.expired (issue 10 items 2-4): appended here, in this step, when
    -- `turned` is 1 (client: HGET n; data: id, state; no user has decided)
    redis.call("HSET", KEYS[1], "st", "expired")
    status, left, turned = "expired", 0, 1
  end
end
return {status, left, has_state, state or "", user or "", turned}
