-- Decide a deep-link login request: the first decision counts, atomically.
-- One key, so it runs in one Cluster slot.
-- KEYS[1] the request (hash)
-- ARGV[1] "approved" or "denied"  ARGV[2] the deciding user (JSON)  ARGV[3] their id
-- ARGV[4] how long the result waits to be fetched (ms)
-- ARGV[5] pub/sub channel  ARGV[6] message: the request's poll-id hash
-- ARGV[7] the deciding user's session generation (its token is sealed with it)
-- ARGV[8] the number the user picked, "" when none
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
local found = redis.call("HMGET", KEYS[1], "st", "n", "by", "h", "m")
local status, name, by, host, match = found[1], found[2], found[3], found[4], found[5]
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
redis.call("PUBLISH", ARGV[5], ARGV[6])
return {1, decision, name, host, mismatch}
