-- Admit one attempt that may fail (a redeem) against an address's failure budget
-- (lib_attempt.lua).
-- KEYS[1] failures in the window (counter)   KEYS[2] attempts in flight (zset id -> ms)
-- ARGV[1] now (ms)   ARGV[2] limit   ARGV[3] attempt id   ARGV[4] in-flight lifetime (ms)
-- Returns {0, 0} admitted, {1, ms until the window ends} over the limit,
-- {2, 0} no room now: attempts in flight may free it (ask again shortly).
--!include lib_attempt.lua
return attempt_admit(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4])
