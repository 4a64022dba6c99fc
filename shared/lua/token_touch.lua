-- Read what decides whether an access token counts (the user record, the session
-- generation, the token's field) and note that it was used: the field's last-used
-- minute moves on only when a new minute (since the session began) has started, so a
-- busy token writes at most once a minute. One round trip, as the HMGET it replaces.
-- KEYS[1] the user (hash, as in token_register.lua)
-- ARGV[1] token id   ARGV[2] the generation it was sealed at   ARGV[3] now (unix s)
-- Returns {record, generation, field} as HMGET would (false where absent), as read.
local found = redis.call("HMGET", KEYS[1], "r", "g", ARGV[1])
local state = found[3]
if found[1] and state and (found[2] or "0") == ARGV[2] and string.sub(state, 1, 1) ~= "-" then
  local expiry, lifetime, used, rest = string.match(state, "^(%d+)|(%d+)|(%d+)(.*)$")
  if expiry and tonumber(expiry) > tonumber(ARGV[3]) then
    local began = tonumber(expiry) - tonumber(lifetime) * 60
    local minute = math.floor((tonumber(ARGV[3]) - began) / 60)
    if minute > tonumber(used) then
      redis.call("HSET", KEYS[1], ARGV[1], expiry .. "|" .. lifetime .. "|" .. minute .. rest)
    end
  end
end
return found
