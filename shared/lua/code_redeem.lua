-- Redeem a code in one step: admit the attempt against the address's budget, read the
-- code, turn it from live to redeemed, list the access token among its user's, settle the
-- attempt and count it; for an API client, also append code.redeemed and wake its
-- deliverer. The user's keys are made here from the user id the code holds, so they are
-- not in KEYS: a Cluster, where they live in other slots, redeems in two steps instead
-- (shared.codes), with the scripts this one is made of; so does a process whose server
-- refused this script for its keys (which it does before any write, see below).
-- KEYS[1] the address's failures   KEYS[2] its attempts in flight (lib_attempt.lua)
-- KEYS[3] the code (lib_code.lua)   KEYS[4] a counters shard
-- KEYS[5] (an API client's redeem) the event wake stream
-- ARGV[1] now (ms)   ARGV[2] failure limit   ARGV[3] attempt id
-- ARGV[4] in-flight lifetime (ms)   ARGV[5] failure window (ms)
-- ARGV[6] a user's hash key before the user id (the key is that, the id and "}")
-- ARGV[7] token id   ARGV[8] its lifetime (s), also how long the user's hash then lives
-- ARGV[9] the token field's tail   ARGV[10] the counter's field
-- ARGV[11], ARGV[12] (an API client's redeem) a user's event stream key before the user
--         id, and the client's name
-- Returns {0, the code's value[, the event's entry id]} redeemed; {1, ms} or {2, 0} not
-- admitted (attempt_admit's answers, nothing else done); {3, failures} not a live code (a
-- failure spent); {4} redeemed, but a /logout since its issue ended it: no token, nothing
-- spent (the two steps' answers in the same cases).
--!include lib_attempt.lua
--!include lib_code.lua
--!include lib_register_token.lua
--!include lib_user_json.lua
local now = tonumber(ARGV[1])
-- reads first, the keys not in KEYS among them: a server that refuses those (a node in
-- cluster mode, a server that wants every key declared) refuses before anything is written
local value = redis.call("GET", KEYS[3])
local uid, generation, record = live_code(value, now)
local user_key, events_key
if uid then
  user_key = ARGV[6] .. uid .. "}"
  redis.call("EXISTS", user_key)
  if KEYS[5] then
    events_key = ARGV[11] .. uid .. "}"
    redis.call("EXISTS", events_key)
  end
end
local admitted = attempt_admit(KEYS[1], KEYS[2], now, ARGV[2], ARGV[3], ARGV[4])
if admitted[1] ~= 0 then
  return admitted
end
if not uid then
  return {3, attempt_settle(KEYS[1], KEYS[2], ARGV[3], "1", ARGV[5])}
end
mark_redeemed(KEYS[3], value)
attempt_settle(KEYS[1], KEYS[2], ARGV[3], "0", ARGV[5])
local seconds = math.floor(now / 1000)
local lifetime = tonumber(ARGV[8])
if not register_token(user_key, ARGV[7], tostring(seconds + lifetime), seconds, lifetime, record,
    generation, ARGV[9]) then
  return {4}
end
redis.call("HINCRBY", KEYS[4], ARGV[10], 1)
if not events_key then
  return {0, value}
end
redis.call("XADD", KEYS[5], "*", "u", uid)
local data = '{"user":' .. user_json(uid, record) .. ',"session":"' .. ARGV[7] .. '"}'
return {0, value, redis.call("XADD", events_key, "*",
  "t", "code.redeemed", "c", ARGV[12], "d", data, "ts", ARGV[1])}
