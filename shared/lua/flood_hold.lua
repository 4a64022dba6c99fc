-- Telegram said wait (a 429): hold every process's sends that long, never shortening a
-- longer hold already set. Redis's own clock, as in flood.lua.
-- KEYS[1] the bot's flood wait (ms until which sends are held)   ARGV[1] the wait (ms)
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local until_ = now + tonumber(ARGV[1])
if tonumber(redis.call("GET", KEYS[1]) or "0") < until_ then
  redis.call("SET", KEYS[1], until_, "PX", ARGV[1])
end
return until_
