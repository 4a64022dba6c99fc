-- Decide a deep-link login request: the first decision counts, atomically, and so does
-- its event. Both keys are tagged by the request's id hash: one Cluster slot.
-- KEYS[1] the request (hash)
-- KEYS[2] the request's event stream, keys.login_events(id hash)
-- ARGV[1] "approved" or "denied"  ARGV[2] the deciding user (JSON)  ARGV[3] their id
-- ARGV[4] how long the result waits to be fetched (ms)
-- ARGV[5] pub/sub channel  ARGV[6] message: the request's poll-id hash
-- ARGV[7] the deciding user's session generation (its token is sealed with it)
-- ARGV[8] the number the user picked, "" when none
-- ARGV[9] the event's data without the state, '{"user":{...}}'  ARGV[10] its time (ms)
-- ARGV[11] how long KEYS[2] is kept (ms; shared.events.login_events_ttl_ms), ARGV[4]
-- when not given
-- A decision that counts for an API client's request (its name `n` not "", its client
-- `c` not "oidc") appends login.approved/login.denied to KEYS[2], the fields of a user
-- stream entry (shared.events) plus u, the user's id, for a deliverer to move into the
-- user's stream; KEYS[2] outlives the request (ARGV[11], a day past EVENT_RETRY_SECONDS:
-- an API down, or a wake backlog, longer than the request's TTL loses no login event).
-- A request with a match number `m` (an authorization page's) is approved only with
-- ARGV[8] == m: an approval with another number, or with none (a forged Approve),
-- denies it, so a phishing page relaying the link gets a denial, not a second try.
-- Returns {outcome, status, client name, host, mismatch}:
--   {1, status, name, host, mismatch}  decided now
--   {2, status, name, host, mismatch}  this same user's same decision again (a
--                                      redelivered tap)
--   {0, status, name, host, mismatch}  someone decided it before: `status` is that
--   {-1, "", "", "", 0}                no such request (unknown, expired, or its
--                                      approval delivered)
-- `mismatch` is 1 when this tap asked to approve a numbered request without its number.
local found = redis.call("HMGET", KEYS[1], "st", "n", "by", "h", "m", "c", "s")
local status, name, by, host, match = found[1], found[2], found[3], found[4], found[5]
local owner, state = found[6], found[7]
if not status then
  return {-1, "", "", "", 0}
end
name = name or ""
host = host or ""
local decision, mismatch = ARGV[1], 0
if decision == "approved" and match and ARGV[8] ~= match then
  decision, mismatch = "denied", 1
end
if status ~= "pending" then
  if by == ARGV[3] and status == decision then
    return {2, status, name, host, mismatch}
  end
  return {0, status, name, host, mismatch}
end
redis.call("HSET", KEYS[1], "st", decision, "by", ARGV[3])
if decision == "approved" then
  redis.call("HSET", KEYS[1], "u", ARGV[2], "g", ARGV[7])
end
redis.call("PEXPIRE", KEYS[1], ARGV[4])
if name ~= "" and owner and owner ~= "oidc" then
  local data = ARGV[9]
  if state then
    data = string.sub(data, 1, -2) .. ',"state":' .. cjson.encode(state) .. "}"
  end
  redis.call("XADD", KEYS[2], "*", "t", "login." .. decision, "c", name, "d", data,
    "ts", ARGV[10], "u", ARGV[3])
  redis.call("PEXPIRE", KEYS[2], ARGV[11] or ARGV[4])
end
redis.call("PUBLISH", ARGV[5], ARGV[6])
return {1, decision, name, host, mismatch}
