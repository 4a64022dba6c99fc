-- Turn a pending push approval whose time is up into `expired`: the one step that does
-- (approval_poll.lua and approval_decide.lua only read an approval past its expiry as
-- expired), run by the bot's sweep. One Cluster slot: every key is the user's.
-- KEYS[1] the approval (hash)   KEYS[2] the user (hash; `r` is their record)
-- KEYS[3] the user's event stream   ARGV[1] the user id   ARGV[2] the time (ms): an API
--         client's approval (name set) turned expired appends approval.expired
--         (shared.events) here, in the same step
-- ARGV[3] how long a tombstone lasts (ms)   ARGV[4] how long an approval marked expired
-- stays readable (ms): until then it was kept past its expiry for a late sweep
-- (approval_create.lua)
-- The sweep also runs it at an approval's check time (shared.approval_due): an approval
-- that does not exist then was never created (refused, or its API process died before
-- the create script): a tombstone (a hash with only `x`) takes its key, so a create
-- script arriving even later (a stalled node) refuses to make it (approval_create.lua).
-- Returns {1, client name, text, message id or "", has state (0/1), state, user record
-- or ""} when it turned expired now; {0, "pending", expiry ms, handed (1: a bot took it
-- to send, or sent it; 0: no bot has)} when it is not due yet; {0, status or ""} when it
-- was settled before, or is gone (a tombstone now).
--!include lib_user_json.lua
local found = redis.call("HMGET", KEYS[1], "st", "e", "n", "t", "mid", "s", "i", "sg")
local status, expiry = found[1], found[2]
if status ~= "pending" then
  if not status and redis.call("EXISTS", KEYS[1]) == 0 then
    redis.call("HSET", KEYS[1], "x", "1")
    redis.call("PEXPIRE", KEYS[1], ARGV[3])
  end
  return {0, status or ""}
end
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms < tonumber(expiry) then
  local handed = 0
  if found[5] or found[8] then
    handed = 1
  end
  return {0, "pending", tonumber(expiry), handed}
end
redis.call("HSET", KEYS[1], "st", "expired")
redis.call("PEXPIRE", KEYS[1], ARGV[4])
local has_state = 0
if found[6] then
  has_state = 1
end
local record = redis.call("HGET", KEYS[2], "r")
-- approval.expired: data {user, approval_seed (the deliverer turns it into the id:
-- shared.events.client_data), state?}; nobody decided
if KEYS[3] and found[3] and found[3] ~= "" then
  local data = '{"user":' .. user_json(ARGV[1], record) .. ',"approval_seed":'
    .. cjson.encode(found[7] or "")
  if found[6] then
    data = data .. ',"state":' .. cjson.encode(found[6])
  end
  redis.call("XADD", KEYS[3], "*",
    "t", "approval.expired", "c", found[3], "d", data .. "}", "ts", ARGV[2])
end
return {1, found[3] or "", found[4] or "", found[5] or "", has_state, found[6] or "",
  record or ""}
