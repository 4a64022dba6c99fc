"""What both tglogin workers stand on: settings, the Redis schema and store, hashing."""
