-- Say this instance is alive until ARGV[2] (ms); forget instances dead for a day.
-- KEYS[1] the bot's instances (hash instance -> alive until ms)
-- ARGV[1] instance   ARGV[2] alive until (ms)   ARGV[3] now (ms)
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
local all = redis.call("HGETALL", KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < tonumber(ARGV[3]) - 86400000 then
    redis.call("HDEL", KEYS[1], all[i])
  end
end
redis.call("EXPIRE", KEYS[1], 86400)
return 1
