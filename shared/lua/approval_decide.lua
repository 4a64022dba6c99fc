-- Decide a push approval: the first decision counts, atomically. One key, so it runs
-- in one Cluster slot (the user's).
-- KEYS[1] the approval (hash)
-- ARGV[1] "approved", "denied" (a tap) or "undeliverable" (the bot could not send it)
-- ARGV[2] the deciding user (public JSON; "" for undeliverable)
-- ARGV[3] their Telegram id ("" for undeliverable): must be the approval's user
-- ARGV[4] the number the user picked, "" when none
-- ARGV[5] pub/sub channel   ARGV[6] message: the approval's key hash
-- ARGV[7] how long the result waits to be read (ms)
-- KEYS[2] the user's event stream, ARGV[8] the time (ms): an API client's approval
--         (name set) decided approved or denied now appends approval.approved or
--         approval.denied (shared.events) here, in the same step
-- An approval with a match number `m` is approved only with ARGV[4] == m: an approval
-- with another number, or none (a forged Approve), denies it.
-- Returns {outcome, status, client name, mismatch, has state, state, message id or ""}
-- (the message the bot noted sending, `mid`; outcome -1 has no seventh):
--   outcome 1   decided now (status is this decision)
--   outcome 2   this same user's same decision again (a redelivered tap)
--   outcome 0   decided before: status is that decision (or undeliverable)
--   outcome -2  expired (status "expired"); has state etc. as usual
--   outcome -1  no such approval (unknown, gone, or another user's)
local found = redis.call("HMGET", KEYS[1], "st", "n", "by", "m", "e", "uid", "s", "i", "mid")
local status, name, by, match, expiry, uid, state, seed, mid =
  found[1], found[2], found[3], found[4], found[5], found[6], found[7], found[8],
  found[9] or ""
if not status then
  return {-1, "", "", 0, 0, ""}
end
local decision, deciding = ARGV[1], ARGV[3]
if decision ~= "undeliverable" and deciding ~= uid then
  return {-1, "", "", 0, 0, ""}
end
name = name or ""
local has_state = 0
if state then
  has_state = 1
end
if status == "pending" then
  local now = redis.call("TIME")
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if now_ms >= tonumber(expiry) then
    -- past its expiry: too late (approval_expire.lua marks it expired, with its event)
    return {-2, "expired", name, 0, has_state, state or "", mid}
  end
end
if status == "expired" then
  return {-2, "expired", name, 0, has_state, state or "", mid}
end
local mismatch = 0
if decision == "approved" and match and ARGV[4] ~= match then
  decision, mismatch = "denied", 1
end
if status ~= "pending" then
  if by == deciding and status == decision then
    return {2, status, name, mismatch, has_state, state or "", mid}
  end
  return {0, status, name, mismatch, has_state, state or "", mid}
end
redis.call("HSET", KEYS[1], "st", decision)
if deciding ~= "" then
  redis.call("HSET", KEYS[1], "by", deciding, "u", ARGV[2])
end
redis.call("PEXPIRE", KEYS[1], ARGV[7])
redis.call("PUBLISH", ARGV[5], ARGV[6])
-- approval.approved / approval.denied: data {user, approval_seed (the deliverer turns it
-- into the id: shared.events.client_data), state?}
if KEYS[2] and name ~= "" and (decision == "approved" or decision == "denied") then
  local data = '{"user":' .. ARGV[2] .. ',"approval_seed":' .. cjson.encode(seed or "")
  if state then
    data = data .. ',"state":' .. cjson.encode(state)
  end
  redis.call("XADD", KEYS[2], "*",
    "t", "approval." .. decision, "c", name, "d", data .. "}", "ts", ARGV[8])
end
return {1, decision, name, mismatch, has_state, state or "", mid}
