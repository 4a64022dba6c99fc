-- End one session from the bot (/sessions, End): its access token is marked revoked
-- until it would have expired anyway (as token_revoke.lua marks one); an OpenID Connect
-- session's token family ends with it (its refresh token and every access token it
-- issued, as oidc_family_revoke.lua ends one), so the site cannot refresh it back.
-- KEYS[1] the user (hash, as in token_register.lua)
-- KEYS[2] the user's event stream (shared.events)
-- KEYS[3] (only for an OIDC session) the family its field names
-- ARGV[1] token id   ARGV[2] now (unix s)
-- ARGV[3..6] (only for an API client's session) session.ended's type, client, data, time
--         (shared.events), appended when it ends; an OIDC client's or the open API's
--         session passes none (no one to tell: OIDC clients have no event stream yet)
-- Returns {1, the field as it was, the family's OIDC client id or ""} when it was live
-- and is now ended; {0} when it was not (unknown, expired, revoked, ended by /logout).
local now = tonumber(ARGV[2])
local state = redis.call("HGET", KEYS[1], ARGV[1])
if not state or string.sub(state, 1, 1) == "-" then
  return {0}
end
local function revoke(id, expiry)
  redis.call("HSET", KEYS[1], id, "-" .. expiry)
  if redis.call("TTL", KEYS[1]) < expiry - now then
    redis.call("EXPIRE", KEYS[1], math.max(1, expiry - now))
  end
end
local expiry = tonumber(string.match(state, "^(%d+)"))
if expiry <= now then
  return {0}
end
revoke(ARGV[1], expiry)
local client = ""
if KEYS[3] and redis.call("EXISTS", KEYS[3]) == 1 then
  client = redis.call("HGET", KEYS[3], "c") or ""
  local fields = redis.call("HGETALL", KEYS[3])
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if string.sub(name, 1, 1) == "t" and tonumber(value) > now then
      revoke(string.sub(name, 2), tonumber(value))
    end
  end
  redis.call("DEL", KEYS[3])
end
-- session.ended, in this same atomic step
if ARGV[3] then
  redis.call("XADD", KEYS[2], "*",
    "t", ARGV[3], "c", ARGV[4], "d", ARGV[5], "ts", ARGV[6])
end
return {1, state, client}
