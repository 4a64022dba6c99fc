-- Give up a claim on an update that could not be handled (it will be handled again).
-- KEYS[1] the update's ledger bucket   ARGV[1] field   ARGV[2] this instance
if redis.call("HGET", KEYS[1], ARGV[1]) == "c:" .. ARGV[2] then
  return redis.call("HDEL", KEYS[1], ARGV[1])
end
return 0
