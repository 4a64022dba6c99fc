-- Append one event to a user's event stream (shared.events): the emission snippet on its
-- own, for an event with no other change. Every script that makes a change appends its
-- event the same way, in the same script (never trimmed: an entry leaves the stream
-- only once its client has it, delivered or dead-lettered):
--   KEYS[1]  the user's event stream, keys.events(user id)
--   ARGV[1]  type, ARGV[2] client (API_KEYS name, "" none), ARGV[3] data JSON, ARGV[4] ms
-- Returns the entry's id.
return redis.call("XADD", KEYS[1], "*",
  "t", ARGV[1], "c", ARGV[2], "d", ARGV[3], "ts", ARGV[4])
