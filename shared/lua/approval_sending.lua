-- A bot process takes a push approval to send it, for one queue entry: noted in the
-- approval (`sg` when, `sq` which entry) before the message goes to Telegram. One key,
-- the user's Cluster slot.
-- KEYS[1] the approval (hash)   ARGV[1] the queue entry's id   ARGV[2] the lease (ms)
-- Two entries may name one approval (the sweep queues it again when no bot took it by
-- its check time: the first entry may be lost, or only slow): the first to take it
-- sends; the other is told to wait while the taker's note is fresh (the taker renews it
-- while its send lasts) and may take it once the note is older than the lease (the taker
-- died). Run again for the same entry it renews the note.
-- Returns {1, taken before (1: an earlier attempt may have reached Telegram, 0: the
-- first), client name, text, match number or ""} take it and send; {2} another entry's
-- send is under way; {0} nothing to send (sent, settled, expired, gone).
local found = redis.call("HMGET", KEYS[1], "st", "e", "mid", "sg", "sq", "n", "t", "m")
local status, expiry, mid, taken, by = found[1], found[2], found[3], found[4], found[5]
if status ~= "pending" or mid or not found[7] then
  return {0}
end
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms >= tonumber(expiry) then
  return {0}
end
if taken and by ~= ARGV[1] and now_ms - tonumber(taken) < tonumber(ARGV[2]) then
  return {2}
end
local before = 0
if taken then
  before = 1
end
redis.call("HSET", KEYS[1], "sg", tostring(now_ms), "sq", ARGV[1])
return {1, before, found[6] or "", found[7], found[8] or ""}
