-- Append an event to a client's pull stream (keys.event_client), keeping about its last
-- ARGV[1] entries: once ARGV[2] more pile up, the oldest beyond ARGV[1] go, the newest of
-- them by XDEL (so the stream's max-deleted-entry-id names it: GET /v1/events tells a
-- cursor before it that it missed events, `gap`), the rest by XTRIM MINID.
-- KEYS[1] the pull stream  ARGV[1] entries kept  ARGV[2] slack
-- ARGV[3..] the entry's fields and values (t, d, ts, w)
-- Returns the entry's id.
local id = redis.call("XADD", KEYS[1], "*", unpack(ARGV, 3))
local over = redis.call("XLEN", KEYS[1]) - tonumber(ARGV[1])
if over >= tonumber(ARGV[2]) then
  local old = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", over)
  local last = old[#old][1]
  redis.call("XDEL", KEYS[1], last)
  redis.call("XTRIM", KEYS[1], "MINID", last)
end
return id
