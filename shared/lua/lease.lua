-- Take or keep a lease: set KEYS[1] to this holder unless another holds it.
-- KEYS[1] the lease   ARGV[1] holder   ARGV[2] lease length (ms)
-- Returns 1 when ARGV[1] holds the lease for ARGV[2] ms from now, else 0.
local holder = redis.call("GET", KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return 1
