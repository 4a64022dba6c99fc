-- Delete KEYS[1] only if it still holds ARGV[1] (a lease or lock given back by its holder).
-- Returns 1 when deleted.
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
