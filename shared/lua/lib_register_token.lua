-- List a new access token among its user's (hash: r record, g generation, <token id> ->
-- the token's field, see shared/tokens.py), checking the session generation it is
-- sealed at in the same step: a /logout after this ends it, and one before does not.
--!include lib_list_token.lua

-- `token_id` expiring at `expiry` (unix s), listed at `now` (unix s); the user's hash
-- then lives `lifetime` s; `record` ("" keeps it) becomes the user's record; `generation`
-- ("" for the current one) is the one the token must be made at; `tail` ends its field.
-- Returns whether the token counts (listed, unless 256 are), and the generation.
local function register_token(user_key, token_id, expiry, now, lifetime, record, generation,
                              tail)
  local current = redis.call("HGET", user_key, "g") or "0"
  if generation ~= "" and generation ~= current then
    return false, current
  end
  -- forget tokens that have expired anyway, now and then (a hash of few fields is cheap)
  if redis.call("HLEN", user_key) > 8 then
    local fields = redis.call("HGETALL", user_key)
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name ~= "r" and name ~= "g" then
        local expires = tonumber(string.match(fields[i + 1], "^-?(%d+)"))
        if expires <= now then
          redis.call("HDEL", user_key, name)
        end
      end
    end
  end
  list_token(user_key, token_id, expiry, now, now, tail)
  if record ~= "" then
    redis.call("HSET", user_key, "r", record)
  end
  redis.call("EXPIRE", user_key, lifetime)
  return true, current
end
