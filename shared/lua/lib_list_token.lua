-- List a token in its user's hash as shared/tokens.py reads the field ("<expiry>|<lifetime
-- min>|<last use, min after it began>|<tail>"), unless 256 are listed already (every scan
-- of the hash stays short): past that a token still counts and /logout ends it by the
-- generation; it is only not in the number /logout reports, nor in /sessions.
local function list_token(user_key, token_id, expiry_text, began, now, tail)
  local others = redis.call("HEXISTS", user_key, "r") + redis.call("HEXISTS", user_key, "g")
  if redis.call("HLEN", user_key) - others < 256 then
    local expiry = tonumber(expiry_text)
    redis.call("HSET", user_key, token_id, expiry_text .. "|" .. math.floor((expiry - began) / 60)
      .. "|" .. math.floor((now - began) / 60) .. "|" .. tail)
  end
end
