-- An address's failure budget for attempts that may fail (redeems). Only failures spend
-- it; attempts in flight hold room in it until they are settled, so a burst of guesses
-- cannot overrun it, while a burst of valid redeems is held back a moment at worst,
-- never refused. The window starts with the first failure and is never extended.
-- failures_key: failures in the window (counter)   pending_key: attempts in flight
-- (zset attempt id -> ms)

-- Admit one attempt at `now` (ms), `limit` failures, an attempt in flight held for at
-- most `in_flight` ms. Returns {0, 0} admitted, {1, ms until the window ends} over the
-- limit, {2, 0} no room now: attempts in flight may free it (ask again shortly).
local function attempt_admit(failures_key, pending_key, now, limit, id, in_flight)
  limit = tonumber(limit)
  local failures = tonumber(redis.call("GET", failures_key) or "0")
  if failures >= limit then
    return {1, math.max(1, redis.call("PTTL", failures_key))}
  end
  redis.call("ZREMRANGEBYSCORE", pending_key, "-inf", now - tonumber(in_flight))
  if failures + redis.call("ZCARD", pending_key) >= limit then
    return {2, 0}
  end
  redis.call("ZADD", pending_key, now, id)
  redis.call("PEXPIRE", pending_key, in_flight)
  return {0, 0}
end

-- Settle an admitted attempt: it leaves the in-flight set; `failed` ("1") spends the
-- budget, whose window (`window` ms) starts with the first failure. Returns the failures
-- in the window now.
local function attempt_settle(failures_key, pending_key, id, failed, window)
  redis.call("ZREM", pending_key, id)
  if failed == "1" then
    local failures = redis.call("INCR", failures_key)
    if failures == 1 then
      redis.call("PEXPIRE", failures_key, window)
    end
    return failures
  end
  return tonumber(redis.call("GET", failures_key) or "0")
end
