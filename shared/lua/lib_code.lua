-- A login code's value: "<state><user id>|<expiry ms>|<update mark>|<generation>|<record>"
-- (shared/keys.py), state L while it is live.

-- The user id, session generation and user record of a code's `value` (nil: no key)
-- when it is live and not expired at `now` (ms); else nothing.
local function live_code(value, now)
  if not value then
    return nil
  end
  local user, expiry, generation, record = string.match(value, "^L(%d+)|(%d+)|[^|]*|(%d+)|(.*)$")
  if not user or tonumber(expiry) <= now then
    return nil
  end
  return user, generation, record
end

-- Turn the live code `value` at `key` redeemed, keeping its TTL.
local function mark_redeemed(key, value)
  redis.call("SET", key, "S" .. string.sub(value, 2), "KEEPTTL")
end
