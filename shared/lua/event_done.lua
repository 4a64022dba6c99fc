-- An event its client has (delivered, or dead-lettered): out of the user's stream, its
-- retry state dropped, and the stream's key deleted once it is empty, in the user's slot,
-- atomic (an event appended meanwhile keeps it). A stream whose newest id is from this
-- millisecond or the last ARGV[3] ms is kept for now (an id is an event's webhook-id: a
-- stream made again must not give a new event the id of one just delivered); the
-- deliverer comes back for it.
-- KEYS[1] the user's stream  KEYS[2] the user's retry states (hash: stable id -> JSON)
-- ARGV[1] the entry's id  ARGV[2] the event's stable id  ARGV[3] the margin (ms)
-- (ARGV[1] "": no entry, only the key's deletion if the stream is empty)
-- Returns the entries left, 0 when the key is gone, -1 when empty and kept for now.
if ARGV[1] ~= "" then
  redis.call("XDEL", KEYS[1], ARGV[1])
  redis.call("HDEL", KEYS[2], ARGV[2])
end
local left = redis.call("XLEN", KEYS[1])
if left > 0 then
  return left
end
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
local info = redis.call("XINFO", "STREAM", KEYS[1])
local last = "0-0"
for i = 1, #info, 2 do
  if info[i] == "last-generated-id" then last = info[i + 1] end
end
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local last_ms = tonumber(string.match(last, "^(%d+)"))
if last_ms ~= nil and last_ms + tonumber(ARGV[3]) >= now_ms then
  return -1
end
redis.call("DEL", KEYS[1])
if redis.call("HLEN", KEYS[2]) == 0 then
  redis.call("DEL", KEYS[2])
end
return 0
