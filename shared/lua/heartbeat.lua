-- Say this instance is alive for ARGV[2] ms more; forget instances dead for a minute.
-- Times are Redis's own clock, so processes on hosts whose clocks differ agree.
-- KEYS[1] the bot's instances (hash instance -> alive until ms)
-- ARGV[1] instance   ARGV[2] how long it counts as alive (ms)
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call("HSET", KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
local all = redis.call("HGETALL", KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now - 60000 then
    redis.call("HDEL", KEYS[1], all[i])
  end
end
redis.call("EXPIRE", KEYS[1], 86400)
return 1
