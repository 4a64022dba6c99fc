-- Reserve one message send under Telegram's flood limits, for every bot process at once.
-- KEYS[1] the bot's recent sends (zset)   KEYS[2] the chat's recent sends (zset)
-- KEYS[3] the bot's flood wait (ms until which Telegram asked to hold all sends)
-- ARGV[1] (unused: Redis's own clock is the one every process shares)
-- ARGV[2] sends allowed per window, all chats   ARGV[3] that window (ms)
-- ARGV[4] sends allowed per chat window   ARGV[5] the chat window (ms)   ARGV[6] a unique member
-- Returns 0 when the send is reserved, else the ms to wait before asking again.
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local hold = tonumber(redis.call("GET", KEYS[3]) or "0")
if hold > now then
  return hold - now
end
local function wait(key, limit, window)
  redis.call("ZREMRANGEBYSCORE", key, "-inf", now - window)
  if redis.call("ZCARD", key) < limit then
    return 0
  end
  local oldest = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
  return math.max(1, tonumber(oldest[2]) + window - now)
end
local all = wait(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local chat = wait(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
if all > 0 or chat > 0 then
  return math.max(all, chat)
end
redis.call("ZADD", KEYS[1], now, ARGV[6])
redis.call("PEXPIRE", KEYS[1], ARGV[3])
redis.call("ZADD", KEYS[2], now, ARGV[6])
redis.call("PEXPIRE", KEYS[2], ARGV[5])
return 0
