-- End every access token of a user (`/logout`). Raising the generation ends every
-- token made before this step, including one made at the same moment: a redeem reads
-- the generation in its own atomic step. (The user's live code is voided beside this.)
-- KEYS[1] the user (hash, as in token_register.lua)
-- ARGV[1] now (unix s)   ARGV[2] how long the user's hash lives (s)
-- Returns how many live tokens ended.
local now = tonumber(ARGV[1])
local ended = 0
local fields = redis.call("HGETALL", KEYS[1])
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if name ~= "r" and name ~= "g" then
    -- "<expiry>|..." while live, "-<expiry>" once revoked (shared/tokens.py)
    if string.sub(value, 1, 1) ~= "-" and tonumber(string.match(value, "^(%d+)")) > now then
      ended = ended + 1
    end
    redis.call("HDEL", KEYS[1], name)
  end
end
redis.call("HINCRBY", KEYS[1], "g", 1)
redis.call("EXPIRE", KEYS[1], ARGV[2])
return ended
