"""Running tglogin offline on one machine: a Telegram Bot API stand-in, a
private Redis-compatible server, and the `make run` launcher."""
