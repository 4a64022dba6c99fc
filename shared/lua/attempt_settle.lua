-- Settle an admitted attempt: it leaves the in-flight set; a failure spends the budget
-- (lib_attempt.lua).
-- KEYS[1] failures in the window (counter)   KEYS[2] attempts in flight (zset)
-- ARGV[1] attempt id   ARGV[2] 1 if it failed, else 0   ARGV[3] window (ms)
-- Returns the failures in the window now.
--!include lib_attempt.lua
return attempt_settle(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
