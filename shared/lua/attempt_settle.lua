-- Settle an admitted attempt: it leaves the in-flight set; a failure spends the budget.
-- The window starts with the first failure and is never extended by later ones.
-- KEYS[1] failures in the window (counter)   KEYS[2] attempts in flight (zset)
-- ARGV[1] attempt id   ARGV[2] 1 if it failed, else 0   ARGV[3] window (ms)
-- Returns the failures in the window now.
redis.call("ZREM", KEYS[2], ARGV[1])
if ARGV[2] == "1" then
  local failures = redis.call("INCR", KEYS[1])
  if failures == 1 then
    redis.call("PEXPIRE", KEYS[1], ARGV[3])
  end
  return failures
end
return tonumber(redis.call("GET", KEYS[1]) or "0")
