-- End every access token of a user (`/logout`). Raising the generation ends every
-- token made before this step, including one made at the same moment: a redeem reads
-- the generation in its own atomic step. (The user's live code is voided beside this.)
-- KEYS[1] the user (hash, as in token_register.lua)
-- ARGV[1] now (unix s)   ARGV[2] how long the user's hash lives (s)
-- KEYS[2], ARGV[3..] (only when API_KEYS names clients): the user's event stream, the
--         user id, user.logged_out's time (ms), and the names of the API clients as
--         configured: one user.logged_out per API client among the ended sessions, data
--         {"user", "sessions": how many of that client's ended}; OIDC sessions (a
--         family in the field) and the open API's (no client) have no one to tell
-- Returns how many live tokens ended.
--!include lib_user_json.lua
-- the configured name a field's (possibly cut: shared.tokens.field_tail) name stands for
local function configured(stored)
  local found = nil
  for i = 5, #ARGV do
    if ARGV[i] == stored then
      return stored
    end
    if string.sub(ARGV[i], 1, #stored) == stored then
      if found then
        return nil
      end
      found = ARGV[i]
    end
  end
  return found
end
local now = tonumber(ARGV[1])
local ended = 0
local per_client, clients = {}, {}
local fields = redis.call("HGETALL", KEYS[1])
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if name ~= "r" and name ~= "g" then
    -- "<expiry>|..." while live, "-<expiry>" once revoked (shared/tokens.py)
    if string.sub(value, 1, 1) ~= "-" and tonumber(string.match(value, "^(%d+)")) > now then
      ended = ended + 1
      -- "<expiry>|<lifetime>|<used>|<network>|<family>|<client>"
      local family, stored = string.match(value, "^[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|(.+)$")
      local client = KEYS[2] and family == "" and stored and configured(stored)
      if client then
        if not per_client[client] then
          per_client[client] = 0
          clients[#clients + 1] = client
        end
        per_client[client] = per_client[client] + 1
      end
    end
    redis.call("HDEL", KEYS[1], name)
  end
end
if #clients > 0 then
  table.sort(clients)
  local user = user_json(ARGV[3], redis.call("HGET", KEYS[1], "r"))
  for _, client in ipairs(clients) do
    redis.call("XADD", KEYS[2], "*", "t", "user.logged_out",
      "c", client, "d", '{"user":' .. user .. ',"sessions":' .. per_client[client] .. "}",
      "ts", ARGV[4])
  end
end
redis.call("HINCRBY", KEYS[1], "g", 1)
redis.call("EXPIRE", KEYS[1], ARGV[2])
return ended
