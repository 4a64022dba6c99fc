"""A local stand-in for the Telegram Bot API, with a chat page and a JSON control interface.

Run it with `python -m sandbox.telegram --port N`; build it in-process with
`sandbox.telegram.app.create_app()`.
"""
