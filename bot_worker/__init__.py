"""The tglogin bot worker: a python-telegram-bot process that issues login codes."""
