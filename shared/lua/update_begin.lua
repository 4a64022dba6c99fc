-- Claim one update for handling, unless it was handled or a live instance has it.
-- KEYS[1] the update's ledger bucket (hash)   KEYS[2] the bot's instances (hash -> alive until)
-- ARGV[1] field "<update id>:<fingerprint>"   ARGV[2] this instance
-- ARGV[4] bucket TTL (s)   (ARGV[3] unused: liveness is judged by Redis's own clock)
-- Returns {state, ms}:
--   {0, 0}   claimed by ARGV[2]: handle it
--   {1, 0}   already handled: confirm it, do nothing else
--   {2, ms}  being handled by another live instance, alive for ms more: ask again later
local value = redis.call("HGET", KEYS[1], ARGV[1])
if value == "d" then
  return {1, 0}
end
if value then
  local owner = string.sub(value, 3)
  if owner ~= ARGV[2] then
    local alive = tonumber(redis.call("HGET", KEYS[2], owner) or "0")
    local time = redis.call("TIME")
    local left = alive - (tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
    if left > 0 then
      return {2, left}
    end
  end
end
redis.call("HSET", KEYS[1], ARGV[1], "c:" .. ARGV[2])
redis.call("EXPIRE", KEYS[1], ARGV[4])
return {0, 0}
