-- Decide a deep-link login request: the first decision counts, atomically.
-- One key, so it runs in one Cluster slot.
-- KEYS[1] the request (hash)
-- ARGV[1] "approved" or "denied"  ARGV[2] the deciding user (JSON)  ARGV[3] their id
-- ARGV[4] how long the result waits to be fetched (ms)
-- ARGV[5] pub/sub channel  ARGV[6] message: the request's poll-id hash
-- ARGV[7] the deciding user's session generation (its token is sealed with it)
-- Returns {outcome, status, client name}:
--   {1, status, name}  decided now
--   {2, status, name}  this same user's same decision again (a redelivered tap)
--   {0, status, name}  someone decided it before: `status` is that decision
--   {-1, "", ""}       no such request (unknown, expired, or its approval delivered)
local found = redis.call("HMGET", KEYS[1], "st", "n", "by")
local status, name, by = found[1], found[2], found[3]
if not status then
  return {-1, "", ""}
end
name = name or ""
if status ~= "pending" then
  if by == ARGV[3] and status == ARGV[1] then
    return {2, status, name}
  end
  return {0, status, name}
end
redis.call("HSET", KEYS[1], "st", ARGV[1], "by", ARGV[3])
if ARGV[1] == "approved" then
  redis.call("HSET", KEYS[1], "u", ARGV[2], "g", ARGV[7])
end
redis.call("PEXPIRE", KEYS[1], ARGV[4])
redis.call("PUBLISH", ARGV[5], ARGV[6])
return {1, ARGV[1], name}
