-- Note the message the bot sent for a push approval (a bot that claims the queue entry
-- after a crash sees it was sent). Never recreates an approval that is gone.
-- KEYS[1] the approval (hash)   ARGV[1] the message id
-- Returns 1 when noted, 0 when the approval is gone.
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
redis.call("HSET", KEYS[1], "mid", ARGV[1])
return 1
