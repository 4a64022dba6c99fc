-- Note a user due for event delivery in keys.EVENT_DUE (api_worker.user_delivery), or end
-- the lease a delivery pass took on it, atomically.
-- A pass that takes a user's lock re-scores the user to the lock's end plus half a ms
-- (its lease: the only scores that are not whole ms), so a pass that fails or is killed
-- leaves the user due by itself. A note replaces a lease, or else only lowers the score
-- (the earliest time wins): a note made while a pass runs always survives its end.
-- KEYS[1] keys.EVENT_DUE  ARGV[1] the user's id
-- ARGV[2] when the user is due (ms), "" not at all
-- ARGV[3] the lease the calling pass took, "" for a note
-- Returns 1 when the score was changed or removed, 0 if not.
local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if score then score = tonumber(score) else score = nil end
if ARGV[3] ~= "" and score == tonumber(ARGV[3]) then
  -- untouched since this pass took it: this pass says what follows
  if ARGV[2] == "" then
    redis.call("ZREM", KEYS[1], ARGV[1])
  else
    redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1])
  end
  return 1
end
if ARGV[2] == "" then
  return 0
end
local due = tonumber(ARGV[2])
if score == nil or score % 1 ~= 0 or due < score then
  redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1])
  return 1
end
return 0
