-- The move's first step, in the user's slot, atomic: the login event appended to the
-- user's stream, then every entry from its millisecond on (by id: appended there after
-- the login was decided, while its event waited to be moved; one of the same ms counts
-- as after it, as the sequence numbers of two streams say nothing of their order) taken
-- out and appended again after it, each with `eid`, its stable id (kept, or the one its
-- id gave it), so a user's events stay in the order they happened
-- (shared.events.copy_login_event). Never trimmed (an entry leaves only once its client
-- has it).
-- KEYS[1] the user's stream  ARGV[1] the login entry's id  ARGV[2..5] t, c, d, ts
-- ARGV[6] its eid  ARGV[7] the user's id
local newer = redis.call("XRANGE", KEYS[1], string.match(ARGV[1], "^(%d+)"), "+")
local moved = redis.call("XADD", KEYS[1], "*",
  "t", ARGV[2], "c", ARGV[3], "d", ARGV[4], "ts", ARGV[5], "eid", ARGV[6])
for _, entry in ipairs(newer) do
  local fields, named = entry[2], false
  for i = 1, #fields, 2 do
    if fields[i] == "eid" then named = true end
  end
  if not named then
    fields[#fields + 1] = "eid"
    fields[#fields + 1] = "evt_" .. ARGV[7] .. "_" .. entry[1]
  end
  redis.call("XADD", KEYS[1], "*", unpack(fields))
  redis.call("XDEL", KEYS[1], entry[1])
end
return moved
