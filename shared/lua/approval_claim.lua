-- Claim due members of the approvals' due set for one sweeper: the members whose time
-- has come (at most ARGV[1], lowest first) are handed to this caller and their score
-- moved on by the lease, so the next sweeper (another bot process, or this one's next
-- batch) takes the next ones, and a sweeper that dies with them leaves them to come back
-- once the lease is over. The sweeper then settles each member: removes it, or scores it
-- at its approval's expiry (shared.approval_due). One key, so one Cluster slot.
-- KEYS[1] APPROVAL_DUE   ARGV[1] how many at most   ARGV[2] the lease (ms)
-- Returns {member, score before the claim, member, score, ...}.
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now_ms, "WITHSCORES", "LIMIT", 0,
  tonumber(ARGV[1]))
local until_ms = now_ms + tonumber(ARGV[2])
for i = 1, #due, 2 do
  redis.call("ZADD", KEYS[1], "XX", until_ms, due[i])
end
return due
